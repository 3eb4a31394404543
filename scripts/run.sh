#!/usr/bin/env bash
# km's main job on this machine: a local cluster running an example pod.
#
# With what km has today this starts, all on 127.0.0.1:
#   - etcd and `km apiserver` (kubectl works against it),
#   - a local Mesos: `km mesos-master` and one `km mesos-agent`, and runs an
#     example task on it with `km mesos-execute`,
#   - `km scheduler`, then creates a pod with kubectl
#     (manifests/examples/hello-mesos.yaml) that runs through Mesos: the
#     scheduler launches it on the agent, where `km executor` runs it; the
#     script waits until it is Running and shows its `kubectl logs`,
#   - `km controller-manager`, then a Deployment of 3 behind a Service
#     (manifests/examples/web.yaml): the script waits for the rollout and
#     reaches every replica at the HostIP:HostPort its Endpoints list,
#   - the cold-standby recipe of the original k8sm in small: two `km podmaster`s
#     elect which node's kubelet gets the example pod manifest
#     (manifests/examples/hello-pod.yaml), and that node's `km kubelet` runs it
#     and publishes it (a mirror pod) and its node to the API server.
# It exits non-zero when a step fails. Stop with Ctrl-C. With KM_RUN_ONCE=1 it
# shows everything and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

scripts/install-deps.sh
echo "== building km"
cargo build -q -p km
km="$repo/target/debug/km"

state=$(mktemp -d "${TMPDIR:-/tmp}/km-local.XXXXXX")
pids=()
cleanup() {
  echo
  echo "== stopping"
  # The agent's executors stop their pods and exit on SIGTERM (left alone, they
  # would wait for the killed agent for their recovery timeout).
  if [ -n "${api_port:-}" ]; then
    pkill -TERM -f "km executor .*--api-servers=http://127.0.0.1:$api_port" 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name, command...
  local name=$1; shift
  "$@" >"$state/$name.log" 2>&1 &
  pids+=($!)
}
wait_http() { # url, what
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not come up; its log:" >&2
  cat "$state/$3.log" >&2
  exit 1
}

etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
master_port=$(free_port); agent_port=$(free_port); scheduler_port=$(free_port)
# The token km apiserver presents to executors for `kubectl logs`.
head -c 24 /dev/urandom | base64 >"$state/proxy-token"

echo "== etcd and km apiserver"
start etcd etcd --name km-local --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "km-local=http://127.0.0.1:$etcd_peer"
wait_http "http://127.0.0.1:$etcd_port/health" etcd etcd
start apiserver "$km" apiserver --insecure-bind-address=127.0.0.1 --insecure-port="$api_port" \
  --etcd-servers="http://127.0.0.1:$etcd_port" --service-cluster-ip-range=10.10.10.0/24 \
  --kubelet-token-file="$state/proxy-token"
wait_http "http://127.0.0.1:$api_port/healthz" "km apiserver" apiserver
export KUBECONFIG="$state/kubeconfig"
kubectl config set-cluster km --server="http://127.0.0.1:$api_port" >/dev/null
kubectl config set-context km --cluster=km >/dev/null
kubectl config use-context km >/dev/null

echo "== local Mesos: km mesos-master and km mesos-agent"
start mesos-master "$km" mesos-master --ip=127.0.0.1 --port="$master_port" --work_dir="$state/master"
wait_http "http://127.0.0.1:$master_port/health" "km mesos-master" mesos-master
start mesos-agent "$km" mesos-agent --master="127.0.0.1:$master_port" --ip=127.0.0.1 --port="$agent_port" \
  --work_dir="$state/agent" --hostname=mesos-agent-1 --resources="cpus:2;mem:2048;disk:4096;ports:[31000-31099]" \
  --attributes="rack:r1;zone:a"
wait_http "http://127.0.0.1:$agent_port/health" "km mesos-agent" mesos-agent
echo "== an example task on the local Mesos (km mesos-execute)"
"$km" --log=warn mesos-execute --master="127.0.0.1:$master_port" --name=hello-mesos \
  --command='echo "hello from a Mesos task in $(pwd)"' 2>&1 | sed 's/^/   /'
find "$state/agent" -path '*hello-mesos*' -name stdout -exec sed 's/^/   task stdout: /' {} \; 2>/dev/null | head -3

echo "== km scheduler, and a pod created with kubectl that runs through Mesos"
start scheduler "$km" scheduler --api-servers="http://127.0.0.1:$api_port" \
  --mesos-master="127.0.0.1:$master_port" --etcd-servers="http://127.0.0.1:$etcd_port" \
  --address=127.0.0.1 --port="$scheduler_port" --executor-path="file://$km" \
  --executor-proxy-token-file="$state/proxy-token"
wait_http "http://127.0.0.1:$scheduler_port/healthz" "km scheduler" scheduler
kubectl apply -f manifests/examples/hello-mesos.yaml | sed 's/^/   /'
phase=""
for _ in $(seq 1 300); do
  phase=$(kubectl get pod hello-mesos -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [ "$phase" = "Running" ] && break
  sleep 0.2
done
if [ "$phase" != "Running" ]; then
  echo "hello-mesos is not Running (phase: ${phase:-none}); kubectl describe and the scheduler's log:" >&2
  kubectl describe pod hello-mesos >&2 || true
  tail -30 "$state/scheduler.log" >&2
  exit 1
fi
echo "   hello-mesos runs on $(kubectl get pod hello-mesos -o jsonpath='{.spec.nodeName}') as Mesos task $(kubectl get pod hello-mesos -o jsonpath="{.metadata.annotations['k8s\.mesosphere\.io/taskId']}")"
logs=""
for _ in $(seq 1 50); do
  logs=$(kubectl logs hello-mesos --tail=2 2>/dev/null || true)
  [ -n "$logs" ] && break
  sleep 0.2
done
[ -n "$logs" ] || { echo "kubectl logs hello-mesos printed nothing" >&2; kubectl logs hello-mesos >&2 || true; exit 1; }
echo "$logs" | sed 's/^/   kubectl logs: /'

echo "== km controller-manager, and a Deployment of 3 behind a Service, reached at HostIP:HostPort"
cm_port=$(free_port)
start controller-manager "$km" controller-manager --master="http://127.0.0.1:$api_port" \
  --address=127.0.0.1 --port="$cm_port" --host-port-endpoints=true
wait_http "http://127.0.0.1:$cm_port/healthz" "km controller-manager" controller-manager
kubectl apply -f manifests/examples/web.yaml | sed 's/^/   /'
if ! kubectl rollout status deployment/web --timeout=120s | sed 's/^/   /'; then
  echo "deployment web did not roll out; kubectl describe and the logs:" >&2
  kubectl describe deployment web >&2 || true
  kubectl get pods -o wide >&2 || true
  tail -20 "$state/controller-manager.log" "$state/scheduler.log" >&2
  exit 1
fi
endpoints=""
for _ in $(seq 1 100); do
  endpoints=$(kubectl get endpoints web -o jsonpath='{range .subsets[*]}{range .addresses[*]}{.ip}{" "}{end}{"|"}{range .ports[*]}{.port}{end}{end}' 2>/dev/null || true)
  [ "$(echo "${endpoints%%|*}" | wc -w)" -ge 3 ] && break
  sleep 0.3
done
echo "   kubectl get endpoints web: $(kubectl get endpoints web --no-headers 2>/dev/null | awk '{print $2}')"
reached=0
for ep in $(kubectl get endpoints web -o jsonpath='{range .subsets[*]}{range .addresses[*]}{.ip}{"\n"}{end}{end}' | sort -u); do
  for port in $(kubectl get pods -l app=web -o jsonpath="{range .items[?(@.status.hostIP=='$ep')]}{.metadata.annotations['k8s\.mesosphere\.io/port_TCP_8080']}{\"\n\"}{end}"); do
    if out=$(curl -sf --max-time 5 "http://$ep:$port/index.html"); then
      echo "   curl http://$ep:$port/ -> $out"
      reached=$((reached + 1))
    fi
  done
done
[ "$reached" -ge 3 ] || { echo "reached $reached of 3 replicas through their endpoints" >&2; kubectl get endpoints web -o yaml >&2; exit 1; }

echo "== the cold-standby recipe in small: podmasters elect the node whose km kubelet runs the example pod"
mkdir -p "$state/manifests-src" "$state/node-1/manifests" "$state/node-2/manifests"
cp manifests/examples/hello-pod.yaml "$state/manifests-src/"
for node in node-1 node-2; do
  start "podmaster-$node" "$km" podmaster --etcd-servers="http://127.0.0.1:$etcd_port" --key=hello \
    --whoami="$node" --source-file="$state/manifests-src/hello-pod.yaml" \
    --dest-file="$state/$node/manifests/hello-pod.yaml" --sleep=1s --ttl-secs=10
  start "kubelet-$node" "$km" kubelet --manifest-dir="$state/$node/manifests" --file-check-frequency=1s \
    --root-dir="$state/$node/kubelet" --hostname-override="$node" \
    --api-servers="http://127.0.0.1:$api_port"
done
holder=""
for _ in $(seq 1 50); do
  for node in node-1 node-2; do
    if [ -f "$state/$node/manifests/hello-pod.yaml" ]; then holder=$node; fi
  done
  [ -n "$holder" ] && break
  sleep 0.2
done
[ -n "$holder" ] || { echo "no podmaster became master" >&2; cat "$state"/podmaster-*.log >&2; exit 1; }
echo "   the podmaster on $holder holds the manifest; its kubelet starts the pod"
for _ in $(seq 1 50); do
  if grep -rqs "^hello from km" "$state/$holder/kubelet" 2>/dev/null; then break; fi
  sleep 0.2
done
grep -rhs "^hello from km" "$state/$holder/kubelet" | head -2 | sed 's/^/   pod output: /'
# The kubelets publish their nodes and the pod (as a mirror pod) to km apiserver.
for _ in $(seq 1 50); do
  phase=$(kubectl get pod "hello-$holder" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [ "$phase" = "Running" ] && break
  sleep 0.2
done

echo
echo "km is running (state in $state):"
echo "  kubectl:      KUBECONFIG=$KUBECONFIG kubectl get nodes,pods -o wide"
echo "  Mesos master: http://127.0.0.1:$master_port/master/state"
echo "  Mesos agent:  http://127.0.0.1:$agent_port/state"
echo "  scheduler:    http://127.0.0.1:$scheduler_port/metrics, /debug/registry/tasks"
echo "  controller-manager: http://127.0.0.1:$cm_port/metrics"
echo "  logs:         $state/*.log"
echo "  kubectl get nodes,pods,svc,endpoints -o wide:"
kubectl get nodes,pods,svc,endpoints -o wide 2>&1 | sed 's/^/    /' || true
if [ "${KM_RUN_ONCE:-0}" = "1" ]; then exit 0; fi
echo "Ctrl-C to stop."
wait
