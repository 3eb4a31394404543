#!/usr/bin/env bash
# km's main job on this machine: a local km cluster running an example.
#
# It builds km, starts `km local-up` (etcd, km apiserver, km mesos-master, two
# km mesos-agents, km scheduler, km controller-manager) in a temporary data
# directory and waits for its "cluster ready" line, builds the local test image
# (tests/images/build.sh), and applies manifests/examples/local-up.yaml with
# kubectl: a Deployment of 3 behind a Service, a native-runtime pod and a
# Docker pod, all run through Mesos. It waits until they are Running, shows
# `kubectl get nodes,pods,svc,endpoints -o wide`, reaches every endpoint of the
# Service at its HostIP:HostPort with curl, shows `kubectl logs` of the
# Docker pod, and restarts the Deployment with `kubectl restart` (km as a
# kubectl plugin). It exits non-zero when a step fails.
#
# With KM_RUN_ONCE=1 it then stops km local-up with SIGTERM and checks that
# nothing of the cluster is left (no process of its data directory, no container
# of its pods). Otherwise the cluster runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

scripts/install-deps.sh
echo "== building km"
cargo build -q -p km
km="${CARGO_TARGET_DIR:-$repo/target}/debug/km"

work=$(mktemp -d "${TMPDIR:-/tmp}/km-run.XXXXXX")
data="$work/cluster"
out="$work/local-up.out"
export KUBECONFIG="$data/kubeconfig"
lu_pid=""
ok=0

stop_local_up() { # SIGTERM to km local-up and wait for it; prints its exit code
  local rc=0 deadline=$((SECONDS + 120))
  kill -TERM "$lu_pid" 2>/dev/null || true
  while kill -0 "$lu_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if kill -0 "$lu_pid" 2>/dev/null; then
    echo "km local-up did not stop within 120 s of SIGTERM" >&2
    kill -KILL "$lu_pid" 2>/dev/null || true
  fi
  wait "$lu_pid" || rc=$?
  lu_pid=""
  return "$rc"
}
cleanup() {
  if [ -n "$lu_pid" ]; then
    echo
    echo "== stopping km local-up"
    stop_local_up || true
    sed -n '/stopping the cluster/,$p' "$out" | sed 's/^/   /'
  fi
  if [ "$ok" = 1 ]; then rm -rf "$work"; else echo "logs kept in $data/logs" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { # message: show it, km local-up's output and the cluster's pods, exit 1
  echo "FAILED: $1" >&2
  echo "--- km local-up output:" >&2
  cat "$out" >&2 || true
  kubectl get pods -o wide >&2 2>/dev/null || true
  exit 1
}

echo "== km local-up --data-dir $data --agents 2 --pod-infra-container-image km-test/pause:latest"
t0=$(date +%s.%N)
"$km" local-up --data-dir "$data" --agents 2 --pod-infra-container-image km-test/pause:latest >"$out" 2>&1 &
lu_pid=$!
deadline=$((SECONDS + 120))
until grep -q "cluster ready" "$out"; do
  kill -0 "$lu_pid" 2>/dev/null || { wait "$lu_pid" || true; lu_pid=""; fail "km local-up exited before the cluster was ready"; }
  [ $SECONDS -lt $deadline ] || fail "no \"cluster ready\" line from km local-up within 120 s"
  sleep 0.1
done
t_ready=$(date +%s.%N)
sed 's/^/   /' "$out"

echo "== the local test image (km-test/busybox:latest)"
tests/images/build.sh
echo "   $(docker image inspect km-test/busybox:latest --format '{{.RepoTags}} {{.Id}}' | cut -c1-60)"

echo "== kubectl apply -f manifests/examples/local-up.yaml"
t_apply=$(date +%s.%N)
kubectl apply -f manifests/examples/local-up.yaml | sed 's/^/   /'

running() { # the number of Running pods among the example's
  kubectl get pods -l 'app in (web,hello-native,hello-docker)' \
    -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' 2>/dev/null | grep -c '^Running$' || true
}
deadline=$((SECONDS + 180))
until [ "$(running)" -ge 5 ]; do
  [ $SECONDS -lt $deadline ] || fail "the example's 5 pods are not all Running after 180 s"
  sleep 0.2
done
t_running=$(date +%s.%N)
kubectl rollout status deployment/web --timeout=60s | sed 's/^/   /' || fail "deployment web did not roll out"

# The endpoints controller lists every Ready replica as HostIP:HostPort.
deadline=$((SECONDS + 60))
until [ "$(kubectl get endpoints web -o jsonpath='{range .subsets[*]}{range .addresses[*]}{.ip}{"\n"}{end}{end}' 2>/dev/null | wc -l)" -ge 3 ]; do
  [ $SECONDS -lt $deadline ] || fail "the Service web does not list 3 endpoints after 60 s"
  sleep 0.2
done

echo "== kubectl get nodes,pods,svc,endpoints -o wide"
kubectl get nodes,pods,svc,endpoints -o wide | sed 's/^/   /'

echo "== every endpoint of the Service web, at its HostIP:HostPort"
reached=0
for ep in $(kubectl get endpoints web -o jsonpath='{range .subsets[*]}{range .addresses[*]}{.ip}:{.targetRef.name}{"\n"}{end}{end}'); do
  ip=${ep%%:*}
  pod=${ep#*:}
  port=$(kubectl get pod "$pod" -o jsonpath="{.metadata.annotations['k8s\.mesosphere\.io/port_TCP_8080']}")
  if body=$(curl -sSf --max-time 5 "http://$ip:$port/index.html"); then
    echo "   curl http://$ip:$port/ -> $body"
    reached=$((reached + 1))
  else
    fail "curl http://$ip:$port/ (pod $pod) failed"
  fi
done
[ "$reached" -ge 3 ] || fail "reached $reached of 3 replicas through the Service's endpoints"

echo "== kubectl logs hello-docker"
logs=""
deadline=$((SECONDS + 30))
until [ -n "$logs" ]; do
  logs=$(kubectl logs hello-docker --tail=2 2>/dev/null || true)
  [ -n "$logs" ] || [ $SECONDS -lt $deadline ] || fail "kubectl logs hello-docker printed nothing in 30 s"
  [ -n "$logs" ] || sleep 0.2
done
echo "$logs" | sed 's/^/   /'

# km is also a kubectl plugin: `kubectl restart` replaces every replica, each one
# Ready before the next old one goes.
echo "== kubectl restart deployment/web (km make-symlinks puts kubectl-restart on the PATH)"
"$km" make-symlinks "$work/bin" || fail "km make-symlinks"
if ! PATH="$work/bin:$PATH" kubectl restart deployment/web --timeout=60s 2>&1 | sed 's/^/   /'; then
  fail "kubectl restart deployment/web failed"
fi

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "== timings: cluster ready $(secs "$t0" "$t_ready") s after the start of km local-up;" \
  "the example's 5 pods Running $(secs "$t_apply" "$t_running") s after kubectl apply" \
  "($(secs "$t0" "$t_running") s after the start)"

if [ "${KM_RUN_ONCE:-0}" = "1" ]; then
  uids=$(kubectl get pods -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}')
  echo "== stopping km local-up (SIGTERM)"
  rc=0
  stop_local_up || rc=$?
  sed -n '/stopping the cluster/,$p' "$out" | sed 's/^/   /'
  [ "$rc" = 0 ] || fail "km local-up exited with $rc after SIGTERM"
  left=""
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null || true)
    cwd=$(readlink "$p/cwd" 2>/dev/null || true)
    case "$cmd $cwd" in *"$work"*) left="$left ${p#/proc/}: $cmd"$'\n' ;; esac
  done
  [ -z "$left" ] || fail "processes of the cluster are left:"$'\n'"$left"
  for uid in $uids; do
    c=$(docker ps -aq --filter "label=io.km.pod.uid=$uid")
    [ -z "$c" ] || fail "containers of pod $uid are left: $c"
  done
  echo "   nothing is left: no process of $data, no container of the example's pods"
  ok=1
  exit 0
fi

echo
echo "km is running (data in $data):"
echo "  export KUBECONFIG=$KUBECONFIG; kubectl get nodes,pods -o wide"
echo "  component logs: $data/logs/"
echo "Ctrl-C to stop."
ok=1
wait "$lu_pid"
