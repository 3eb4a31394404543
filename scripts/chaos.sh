#!/usr/bin/env bash
# The chaos run at full size: a km cluster of etcd, two apiservers, a Mesos
# master with simulated agents, two real agents, two HA schedulers and two
# controller-managers runs PODS pods (default 1,000); each component is then
# killed with kill -9 in turn, and after each the run counts pods lost, pods
# running twice, orphan processes and tasks without pods (all must be 0) and
# prints how long recovery took. CI runs the same test with 200 pods.
#
#   scripts/chaos.sh [PODS]
set -euo pipefail
cd "$(dirname "$0")/.."
pods="${1:-1000}"
case "$pods" in
  ''|*[!0-9]*) echo "usage: scripts/chaos.sh [PODS]  (PODS a number, default 1000)" >&2; exit 2 ;;
esac
bash scripts/install-deps.sh
KM_CHAOS_PODS="$pods" exec cargo test --test e2e chaos_run -- --nocapture --test-threads=1
