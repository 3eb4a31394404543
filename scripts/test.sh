#!/usr/bin/env bash
# Everything CI checks, from a fresh clone: system packages, formatting,
# lints, architecture invariants, and every test (unit, property, and
# cross-process tests that start real etcd and km processes), and at the end
# the main job, scripts/run.sh, once.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== dependency invariants"
scripts/check-deps.sh

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --profile ci
else
  cargo test --locked --workspace -- --test-threads=2
fi

echo "== the main job (KM_RUN_ONCE=1 scripts/run.sh)"
KM_RUN_ONCE=1 scripts/run.sh
