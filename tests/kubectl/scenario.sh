#!/usr/bin/env bash
# A kubectl against `km apiserver`: the user workflow (create, apply, get in every form,
# label, annotate, scale, patch, replace, watch, server-side apply, RBAC, validation, explain,
# errors, delete; with KM_ROLLOUT=1 and a km controller-manager beside the server, rollout).
# Usage: scenario.sh http://127.0.0.1:<insecure-port>   (the server runs --authorization-mode=RBAC)
# Runs with a temporary HOME (its own kubeconfig); exits non-zero, naming
# the failed step, on the first unexpected output.
set -euo pipefail

server=${1:?usage: scenario.sh <server-url>}
# The kubectl of KM_KUBECTL_DIR; else kubectl 1.20 (Debian kubernetes-client,
# unpacked by scripts/install-deps.sh) when present; else the one on PATH.
kubectl_dir=${KM_KUBECTL_DIR:-/opt/km-tools/kubernetes-client/usr/bin}
if [ -x "$kubectl_dir/kubectl" ]; then export PATH="$kubectl_dir:$PATH"; fi
echo "kubectl: $(kubectl version --client --short 2>/dev/null || kubectl version --client | head -1)" >&2
here=$(cd "$(dirname "$0")" && pwd)
minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
minor=${minor:-0}
export HOME=$(mktemp -d "${TMPDIR:-/tmp}/km-kubectl-XXXXXX")
trap 'rm -rf "$HOME"' EXIT
kubectl config set-cluster km --server="$server" >/dev/null
kubectl config set-context km --cluster=km --namespace=default >/dev/null
kubectl config use-context km >/dev/null

step=""
out=""
fail() { echo "FAILED at step '$step': $*" >&2; echo "--- output:" >&2; echo "$out" >&2; exit 1; }
run() { out=$("$@" 2>&1) || fail "exit status $? from: $*"; }
run_fails() { if out=$("$@" 2>&1); then fail "expected failure from: $*"; fi; }
expect() { grep -qE -- "$1" <<<"$out" || fail "expected /$1/"; }
expect_not() { if grep -qE -- "$1" <<<"$out"; then fail "did not expect /$1/"; fi; }

step="create -f"
run kubectl create -f "$here/api.yaml"
expect '^deployment.apps/api created$'

step="apply -f (Deployment and Service)"
run kubectl apply -f "$here/web.yaml"
expect '^deployment.apps/web created$'
expect '^service/web created$'

step="get (default columns)"
run kubectl get deployments
expect '^NAME +READY +UP-TO-DATE +AVAILABLE +AGE$'
expect '^web +0/2 +[02] +0 +[0-9]+s$'  # UP-TO-DATE is 2 once a controller-manager runs
expect '^api +0/1 '
run kubectl get services
expect '^NAME +TYPE +CLUSTER-IP +EXTERNAL-IP +PORT\(S\) +AGE$'
expect '^web +ClusterIP +10\.10\.10\.[0-9]+ +<none> +80/TCP '

step="get -o wide"
run kubectl get deployment web -o wide
expect '^NAME +READY +UP-TO-DATE +AVAILABLE +AGE +CONTAINERS +IMAGES +SELECTOR$'
expect '^web +0/2 +[02] +0 +[0-9]+s +nginx +nginx:1.25 +app=web$'

step="get -o yaml"
run kubectl get deployment web -o yaml
expect '^kind: Deployment$'
expect '^  resourceVersion: "[0-9]+"$'
expect '^  uid: [0-9a-f-]{36}$'
expect 'imagePullPolicy: IfNotPresent'
expect 'type: RollingUpdate'
expect 'kubectl.kubernetes.io/last-applied-configuration'

step="label"
run kubectl label deployment web tier=frontend
expect 'deployment.apps/web labeled'
run kubectl get deployments -l tier=frontend -o name
expect '^deployment.apps/web$'
expect_not 'api'

step="annotate"
run kubectl annotate deployment web owner=km-team
# kubectl 1.27 and 1.28 print "annotate" (their own message; the next check reads the value).
expect 'deployment.apps/web annotated?$'
run kubectl get deployment web -o 'jsonpath={.metadata.annotations.owner}'
expect '^km-team$'

step="scale"
run kubectl scale deployment web --replicas=5
expect 'deployment.apps/web scaled'
run kubectl get deployment web -o 'jsonpath={.spec.replicas}'
expect '^5$'

step="patch (strategic, merge, json)"
run kubectl patch deployment web -p '{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"MODE","value":"patched"}]}]}}}}'
expect 'deployment.apps/web patched'
# Strategic: the container list merged on its name, so the image stays.
run kubectl get deployment web -o 'jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[?(@.name=="MODE")].value}'
expect '^nginx:1.25 patched$'
run kubectl patch deployment web --type=merge -p '{"metadata":{"labels":{"patched":"merge"}}}'
expect 'deployment.apps/web patched'
run kubectl patch deployment web --type=json -p '[{"op":"add","path":"/spec/minReadySeconds","value":3}]'
expect 'deployment.apps/web patched'
run kubectl get deployment web -o 'jsonpath={.metadata.labels.patched} {.spec.minReadySeconds}'
expect '^merge 3$'
run_fails kubectl patch deployment web --type=json -p '[{"op":"test","path":"/spec/minReadySeconds","value":4}]'
expect 'The request is invalid|is invalid'

step="get -o json, replace"
run kubectl get deployment api -o json
expect '"kind": "Deployment"'
expect '"replicas": 1'
json_out=$(mktemp)
kubectl get deployment api -o json | sed 's/"replicas": 1/"replicas": 4/' >"$json_out"
run kubectl replace -f "$json_out"
rm -f "$json_out"
expect '^deployment.apps/api replaced$'
run kubectl get deployment api -o 'jsonpath={.spec.replicas}'
expect '^4$'

step="get -w"
watch_out=$(mktemp)
kubectl get deployment web -w >"$watch_out" 2>&1 &
watcher=$!
# The watch has started once it printed the current state; the change shows up after it.
until_seen() { # pattern: wait (30 s at most) until the watch printed a matching line
  local deadline=$((SECONDS + 30))
  until grep -qE -- "$1" "$watch_out"; do
    [ $SECONDS -lt $deadline ] || { out=$(cat "$watch_out"); fail "the watch never printed /$1/"; }
    sleep 0.1
  done
}
until_seen '^web +0/5 '
run kubectl scale deployment web --replicas=3
until_seen '^web +0/3 '
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
out=$(cat "$watch_out"); rm -f "$watch_out"
expect '^NAME +READY +UP-TO-DATE +AVAILABLE +AGE$'
expect '^web +0/5 '
expect '^web +0/3 '

step="apply again after editing the YAML"
run kubectl apply -f "$here/web-v2.yaml"
expect '^deployment.apps/web configured$'
expect '^service/web unchanged$'
run kubectl get deployment web -o 'jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].value} {.metadata.labels.tier} {.metadata.generation}'
expect '^nginx:1.26 bonjour frontend [0-9]+$'

step="apply --server-side (managed fields, conflicts, --force-conflicts, --field-manager, dry run)"
managed=""
if [ "$minor" -ge 21 ]; then managed="--show-managed-fields"; fi
fields='{range .metadata.managedFields[*]}{.manager}/{.operation}{" "}{end}'
run kubectl apply --server-side -f "$here/cache.yaml"
expect '^deployment.apps/cache serverside-applied$'
run kubectl get deployment cache $managed -o "jsonpath=$fields"
expect '^kubectl/Apply( km-controller-manager/Update)* $'
run kubectl get deployment cache $managed -o 'jsonpath={.metadata.managedFields[0].fieldsV1}'
expect '"k:\{\\"name\\":\\"redis\\"\}"'
run kubectl scale deployment cache --replicas=4
run_fails kubectl apply --server-side -f "$here/cache.yaml"
expect 'Apply failed with 1 conflict: conflict with "kubectl[^"]*"( with subresource "scale")? using apps/v1: \.spec\.replicas'
expect 'force-conflicts'
run kubectl apply --server-side --force-conflicts -f "$here/cache.yaml"
expect '^deployment.apps/cache serverside-applied$'
run kubectl get deployment cache -o 'jsonpath={.spec.replicas}'
expect '^2$'
run kubectl apply --server-side --field-manager=ci -f "$here/cache.yaml"
run kubectl get deployment cache $managed -o "jsonpath=$fields"
expect 'ci/Apply'
expect 'kubectl/Apply'
sed 's/replicas: 2/replicas: 7/' "$here/cache.yaml" | sed 's/^  name: cache$/  name: cache/' >"$HOME/cache-7.yaml"
run kubectl apply --server-side --force-conflicts --dry-run=server -f "$HOME/cache-7.yaml"
expect 'serverside-applied \(server dry run\)'
run kubectl get deployment cache -o 'jsonpath={.spec.replicas}'
expect '^2$'
run kubectl create deployment dry --image=nginx --dry-run=server -o name
expect '^deployment.apps/dry$'
run_fails kubectl get deployment dry
expect 'NotFound'
run kubectl delete deployment cache
expect 'deployment.apps "cache" deleted'

if [ "${KM_ROLLOUT:-}" = 1 ]; then
  # Needs km controller-manager beside the server (its deployment controller writes the
  # ReplicaSets whose revisions rollout reads); no replicas, so no pods need to run.
  step="rollout (status, history, undo, restart, pause, resume)"
  run kubectl create deployment roll --image=nginx:1.25 --replicas=0
  run kubectl rollout status deployment roll --timeout=60s
  expect 'deployment "roll" successfully rolled out'
  run kubectl set image deployment/roll nginx=nginx:1.26
  run kubectl rollout status deployment roll --timeout=60s
  expect 'successfully rolled out'
  run kubectl rollout history deployment roll
  expect '^1 +<none>$'
  expect '^2 +<none>$'
  run kubectl rollout undo deployment roll
  expect 'deployment.apps/roll rolled back'
  run kubectl get deployment roll -o 'jsonpath={.spec.template.spec.containers[0].image}'
  expect '^nginx:1.25$'
  run kubectl rollout restart deployment roll
  expect 'deployment.apps/roll restarted'
  run kubectl get deployment roll -o 'jsonpath={.spec.template.metadata.annotations}'
  expect 'kubectl.kubernetes.io/restartedAt'
  run kubectl rollout pause deployment roll
  expect 'deployment.apps/roll paused'
  run kubectl rollout resume deployment roll
  expect 'deployment.apps/roll resumed'
  run kubectl rollout status deployment roll --timeout=60s
  expect 'successfully rolled out'
  run kubectl delete deployment roll
fi

step="statefulset and disruption budget"
run kubectl apply -f "$here/db.yaml"
expect '^statefulset.apps/db created$'
expect '^poddisruptionbudget.policy/db created$'
run kubectl get statefulset db
expect '^NAME +READY +AGE$'
expect '^db +0/2 +[0-9]+s$'
run kubectl get pdb db
expect '^NAME +MIN AVAILABLE +MAX UNAVAILABLE +ALLOWED DISRUPTIONS +AGE$'
expect '^db +1 +N/A +0 +[0-9]+s$'
run kubectl scale statefulset db --replicas=3
expect 'statefulset.apps/db scaled'
run kubectl get statefulset db -o 'jsonpath={.spec.replicas} {.spec.podManagementPolicy}'
expect '^3 OrderedReady$'
run kubectl delete -f "$here/db.yaml"
expect 'statefulset.apps "db" deleted'

step="RBAC: roles, bindings, impersonation, can-i, denials, no escalation"
# The server runs with --authorization-mode=RBAC; the insecure port acts as a superuser, which
# may impersonate (--as) users who have only what their bindings give.
run kubectl auth can-i create pods
expect '^yes$'
run kubectl create namespace team
run kubectl create role pod-reader --verb=get,list,watch --resource=pods -n team
expect '^role.rbac.authorization.k8s.io/pod-reader created$'
run kubectl create rolebinding jane-reads --role=pod-reader --user=jane -n team
expect '^rolebinding.rbac.authorization.k8s.io/jane-reads created$'
run kubectl get rolebindings -n team
expect '^NAME +ROLE +AGE$'
expect '^jane-reads +Role/pod-reader +[0-9]+s$'
run kubectl auth can-i list pods -n team --as=jane
expect '^yes$'
run_fails kubectl auth can-i create pods -n team --as=jane
expect '^no$'
run kubectl get pods -n team --as=jane
expect 'No resources found'
run_fails kubectl create configmap settings -n team --from-literal=a=b --as=jane
expect 'configmaps is forbidden: User "jane" cannot create resource "configmaps" in API group "" in the namespace "team"'
run_fails kubectl get pods -n default --as=jane
expect 'pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default"'
run_fails kubectl get nodes --as=jane
expect 'nodes is forbidden: User "jane" cannot list resource "nodes" in API group "" at the cluster scope'
# An admin of the namespace may grant what she holds there, and nothing more.
run kubectl create rolebinding jane-admin --clusterrole=admin --user=jane -n team
run kubectl create role cm-writer --verb=create --resource=configmaps -n team --as=jane
expect '^role.rbac.authorization.k8s.io/cm-writer created$'
run_fails kubectl create role node-lister --verb=list --resource=nodes -n team --as=jane
expect 'attempting to grant RBAC permissions not currently held'
run_fails kubectl create clusterrolebinding jane-root --clusterrole=cluster-admin --user=jane --as=jane
expect 'forbidden: User "jane" cannot create resource "clusterrolebindings"'
run_fails kubectl get pods -n team --as=bob --as-group=devs
expect 'pods is forbidden: User "bob" cannot list resource "pods"'

step="invalid YAML"
run_fails kubectl apply -f "$here/invalid-yaml.yaml"
expect 'error converting YAML to JSON'

step="client-side validation (/openapi/v2) and explain (/openapi/v3 from 1.27)"
run_fails kubectl create -f "$here/invalid-replicas.yaml"
expect 'error validating data'
expect 'ValidationError\(Deployment\.spec\.replicas\): invalid type for io\.k8s\.api\.apps\.v1\.DeploymentSpec\.replicas: got "string", expected "integer"'
run_fails kubectl apply -f "$here/invalid-field.yaml"
expect 'error validating data'
expect 'unknown field "imagePullPolicyy" in io\.k8s\.api\.core\.v1\.Container'
run_fails kubectl get deployment bad-replicas
expect 'NotFound'
run kubectl create -f "$here/invalid-replicas.yaml" --dry-run=client -o name --validate=false
expect '^deployment.apps/bad-replicas$'
run kubectl create --dry-run=client -o name -f "$here/all-kinds.yaml"
expect '^namespace/team-a$'
expect '^lease.coordination.k8s.io/l$'
expect '^statefulset.apps/sts$'
expect '^poddisruptionbudget.policy/pdb$'
expect_not 'error'
run kubectl explain deployment.spec.replicas
expect '^FIELD: +replicas <integer>$'
run kubectl explain pods.spec.containers
if [ "$minor" -ge 27 ]; then
  # 1.27 and later explain from /openapi/v3 (their format names the item type).
  expect '^FIELD: +containers <\[\]Container>$'
else
  expect '^RESOURCE: +containers <\[\]Object>$'
fi

step="invalid spec"
run_fails kubectl create -f "$here/invalid-spec.yaml"
expect 'The Pod "invalid" is invalid'
expect 'spec.containers\[0\].name: Invalid value: "Bad_Name"'
expect 'spec.containers\[0\].image: Required value'

step="delete"
run kubectl delete -f "$here/web.yaml"
expect 'deployment.apps "web" deleted'
expect 'service "web" deleted'
run kubectl delete deployment api
expect 'deployment.apps "api" deleted'
run kubectl get deployments,services
expect_not '^deployment.apps/'
expect_not '^service/web'
run_fails kubectl get deployment web
expect 'Error from server \(NotFound\): deployments.apps "web" not found'

echo "kubectl scenario: all steps passed"
