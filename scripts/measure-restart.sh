#!/usr/bin/env bash
# Measures `km restart` of a Deployment, and the rolling executor upgrade, by
# hand (not part of CI at this size).
#
#   scripts/measure-restart.sh [REPLICAS] [ROUNDS]
#
# Runs the e2e test restart::a_deployment_restarts_with_no_failed_request with
# REPLICAS pods (default 100) ROUNDS times (default 3): a local cluster (etcd,
# km apiserver, km mesos-master, one km mesos-agent running native pods through
# km executor, km scheduler, km controller-manager), a Deployment of busybox
# httpd servers behind a Service with HostIP:HostPort endpoints, and
# `km restart deployment/web --max-unavailable=10%` while a client polls the
# endpoints. Prints km restart's progress and summary (the time) and the
# requests answered and failed; the test fails if any request failed. Then the
# same with restart::an_executor_upgrade_moves_every_pod_with_no_failed_request:
# REPLICAS pods of a Deployment and a single pod on one executor, km scheduler
# restarted with a new executor configuration, the time until every pod runs
# Ready on the new executor, and the requests answered and failed meanwhile.
set -euo pipefail

REPLICAS=${1:-100}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
for round in $(seq 1 "$ROUNDS"); do
  echo "=== round $round: $REPLICAS replicas"
  KM_RESTART_REPLICAS=$REPLICAS cargo nextest run -p km --test e2e --no-capture \
    -E 'test(=restart::a_deployment_restarts_with_no_failed_request)' 2>&1 |
    grep -E 'restarted:|requests answered|FAIL|panicked' || true
  KM_UPGRADE_REPLICAS=$REPLICAS cargo nextest run -p km --test e2e --no-capture \
    -E 'test(=restart::an_executor_upgrade_moves_every_pod_with_no_failed_request)' 2>&1 |
    grep -E 'executor upgrade of|FAIL|panicked' || true
done
