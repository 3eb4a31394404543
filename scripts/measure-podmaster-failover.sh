#!/usr/bin/env bash
# Measures `km podmaster` failover by hand (not part of CI).
#
#   scripts/measure-podmaster-failover.sh [SLEEP] [TTL_SECS] [ROUNDS]
#
# Starts a throw-away etcd (the `etcd` binary on PATH) and three podmasters
# on one key, each with its own dest file as if on three nodes. Each round
# stops the current master — once with kill -9, once with SIGTERM — at a
# random point of its --sleep cycle, reports the time from the signal until
# another podmaster's dest file appears, then restarts the stopped one. The
# podmasters are started at random offsets too, so the rounds sample the
# phases between the nodes' loops instead of always hitting the same one. Defaults: 5s 30 3 (the
# podmaster's own defaults). Uses target/debug/km unless KM is set.
set -euo pipefail

SLEEP=${1:-5s}
TTL=${2:-30}
ROUNDS=${3:-3}
KM=${KM:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/km}
[[ -x $KM ]] || { echo "no km binary at $KM (cargo build -p km, or set KM)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd is not on PATH (apt-get install etcd-server)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/km-failover.XXXXXX)
CLIENT_PORT=$((20000 + RANDOM % 20000))
PEER_PORT=$((CLIENT_PORT + 1))
declare -a PIDS=()
ETCD_PID=

cleanup() {
  for pid in "${PIDS[@]}" $ETCD_PID; do kill -9 "$pid" 2>/dev/null || true; done
  sleep 0.2
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
# --sleep in seconds (forms 250ms, 5s, 5) and a random fraction of it.
SLEEP_SECS=$(awk -v s="$SLEEP" 'BEGIN { if (s ~ /ms$/) print s / 1000; else { sub(/s$/, "", s); print s } }')
random_part_of_sleep() { awk -v s="$SLEEP_SECS" -v r="$RANDOM" 'BEGIN { printf "%.3f", s * r / 32768 }'; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
dest() { echo "$WORK/node-$1/scheduler.yaml"; }

etcd --name=m --data-dir="$WORK/etcd" \
  --listen-client-urls="http://127.0.0.1:$CLIENT_PORT" --advertise-client-urls="http://127.0.0.1:$CLIENT_PORT" \
  --listen-peer-urls="http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$PEER_PORT" \
  --initial-cluster="m=http://127.0.0.1:$PEER_PORT" --log-level=warn --logger=zap >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
disown "$ETCD_PID"
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"' && break
  sleep 0.1
done

echo 'kind: Pod' >"$WORK/source.yaml"
start() {
  mkdir -p "$WORK/node-$1"
  "$KM" podmaster --etcd-servers="127.0.0.1:$CLIENT_PORT" --key=scheduler --whoami="node-$1" \
    --source-file="$WORK/source.yaml" --dest-file="$(dest "$1")" --sleep="$SLEEP" --ttl-secs="$TTL" \
    2>>"$WORK/node-$1/log" &
  PIDS[$1]=$!
  disown "${PIDS[$1]}" # no "Killed" job notices in the output
}
master() { for i in 0 1 2; do [[ -e $(dest "$i") ]] && { echo "$i"; return; }; done; }
wait_master_other_than() { # $1: excluded node; prints the new master
  while :; do
    for i in 0 1 2; do [[ $i != "$1" && -e $(dest "$i") ]] && { echo "$i"; return; }; done
    sleep 0.01
  done
}

for i in 0 1 2; do start "$i"; sleep "$(random_part_of_sleep)"; done
until [[ -n $(master) ]]; do sleep 0.05; done

echo "km podmaster failover: --sleep=$SLEEP --ttl-secs=$TTL, 3 podmasters, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  for sig in KILL TERM; do
    sleep "$(random_part_of_sleep)"
    m=$(master)
    t0=$(now)
    kill -"$sig" "${PIDS[$m]}"
    next=$(wait_master_other_than "$m")
    echo "round $round: SIG$sig node-$m -> node-$next: $(ms_since "$t0") ms"
    while kill -0 "${PIDS[$m]}" 2>/dev/null; do sleep 0.05; done
    start "$m"
    # A restarted podmaster is a standby: it removes a stale copy at once.
    while [[ -e $(dest "$m") ]]; do sleep 0.05; done
    sleep "$(random_part_of_sleep)"
  done
done
