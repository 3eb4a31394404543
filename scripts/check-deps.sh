#!/usr/bin/env bash
# Architecture invariants that the dependency graph must keep (see
# ARCHITECTURE.md, "Invariants"). Fails with the offending path.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0

# 1. Pure cores: no async runtime, no network, no other km crate.
pure_crates=(km-offer-matcher km-scheduler-core)
forbidden_in_pure='^(tokio|mio|hyper|hyper-util|reqwest|h2|tonic|etcd-client|socket2|axum|km-mesos|km-podmaster)$'
for crate in "${pure_crates[@]}"; do
  bad=$(cargo tree --locked -p "$crate" -e normal --prefix none --format '{p}' 2>/dev/null \
        | awk '{print $1}' | sort -u | grep -E "$forbidden_in_pure" || true)
  if [ -n "$bad" ]; then
    echo "check-deps: pure crate $crate depends on: $bad" >&2
    fail=1
  fi
done

# 2. One TLS stack: rustls with ring. No aws-lc or OpenSSL anywhere.
for banned in aws-lc-rs aws-lc-sys openssl-sys native-tls; do
  if cargo tree --locked --workspace -e normal,build -i "$banned" >/dev/null 2>&1; then
    echo "check-deps: $banned is in the dependency graph:" >&2
    cargo tree --locked --workspace -e normal,build -i "$banned" >&2 || true
    fail=1
  fi
done

if [ "$fail" -ne 0 ]; then exit 1; fi
echo "check-deps: ok (pure: ${pure_crates[*]}; no aws-lc/openssl)"
