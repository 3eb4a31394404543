#!/usr/bin/env bash
# Measures km mesos-master's web page by hand (not part of CI at this size).
#
#   scripts/measure-ui.sh [AGENTS] [TASKS] [ROUNDS]
#
# Runs the e2e test web_ui::the_master_page_loads_and_updates_with_many_agents_and_tasks
# with AGENTS simulated agents (default 1000) and TASKS running tasks (default
# 10000) ROUNDS times (default 3): headless Chromium (through chromedriver)
# opens the page, and the test prints how long until every agent and task is
# counted on it, and how long a task launched afterwards takes to appear.
set -euo pipefail

AGENTS=${1:-1000}
TASKS=${2:-10000}
ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
for round in $(seq 1 "$ROUNDS"); do
  KM_UI_AGENTS=$AGENTS KM_UI_TASKS=$TASKS cargo nextest run -p km --test e2e --no-capture \
    -E 'test(=web_ui::the_master_page_loads_and_updates_with_many_agents_and_tasks)' 2>&1 |
    grep -E 'master page,|GET_STATE with|FAIL|panicked' || true
done
