#!/usr/bin/env bash
# Architecture invariants that the dependency graph must keep (see
# ARCHITECTURE.md, "Invariants"). Fails with the offending path.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0

# cargo tree itself must work (an out-of-date lock file, a broken manifest): every check below
# reads its output, and an empty output would pass them all.
if ! all=$(cargo tree --locked --workspace -e normal,build --prefix none --format '{p}'); then
  echo "check-deps: cargo tree failed; cannot check the dependency graph" >&2
  exit 1
fi

# 1. Pure cores: no async runtime, no network, no other km crate.
pure_crates=(km-resources km-offer-matcher km-scheduler-core)
forbidden_in_pure='^(tokio|mio|hyper|hyper-util|reqwest|h2|tonic|etcd-client|socket2|axum|km-mesos|km-podmaster)$'
for crate in "${pure_crates[@]}"; do
  if ! tree=$(cargo tree --locked -p "$crate" -e normal --prefix none --format '{p}'); then
    echo "check-deps: cargo tree failed for $crate" >&2
    exit 1
  fi
  bad=$(awk '{print $1}' <<<"$tree" | sort -u | grep -E "$forbidden_in_pure" || true)
  if [ -n "$bad" ]; then
    echo "check-deps: pure crate $crate depends on: $bad" >&2
    fail=1
  fi
done

# 2. The shared resource model depends on thiserror and nothing else. Its
#    normal tree without proc-macro crates must be itself and thiserror, and
#    thiserror must be its only direct dependency, so the proc-macro crates of
#    the full tree (syn, quote, ...) can only come in through thiserror.
model=km-resources
names() { awk '{print $1}' | sort -u; }
if ! tree=$(cargo tree --locked -p "$model" -e normal,no-proc-macro --prefix none --format '{p}') \
  || ! direct=$(cargo tree --locked -p "$model" -e normal --depth 1 --prefix none --format '{p}'); then
  echo "check-deps: cargo tree failed for $model" >&2
  exit 1
fi
tree=$(names <<<"$tree")
direct=$(names <<<"$direct")
if ! grep -qx "$model" <<<"$tree"; then
  echo "check-deps: cannot read the dependency tree of $model" >&2
  fail=1
fi
bad=$(printf '%s\n%s\n' "$tree" "$direct" | sort -u | grep -vxE "$model|thiserror" || true)
if [ -n "$bad" ]; then
  echo "check-deps: $model may depend on thiserror only, but depends on:" $bad >&2
  fail=1
fi

# 3. One TLS stack: rustls with ring. No aws-lc or OpenSSL anywhere.
for banned in aws-lc-rs aws-lc-sys openssl-sys native-tls; do
  if awk '{print $1}' <<<"$all" | grep -qx "$banned"; then
    echo "check-deps: $banned is in the dependency graph:" >&2
    cargo tree --locked --workspace -e normal,build -i "$banned" >&2 || true
    fail=1
  fi
done

# 4. Library crates return typed errors (thiserror): anyhow is not one of their dependencies.
#    (It stays at the binary edge: km and the subcommands' top-level run functions.)
lib_crates=(km-resources km-mesos km-offer-matcher km-scheduler-core km-runtime km-cloud-provider)
for crate in "${lib_crates[@]}"; do
  if ! direct=$(cargo tree --locked -p "$crate" -e normal --depth 1 --prefix none --format '{p}'); then
    echo "check-deps: cargo tree failed for $crate" >&2
    exit 1
  fi
  if awk '{print $1}' <<<"$direct" | grep -qx anyhow; then
    echo "check-deps: library crate $crate depends on anyhow; return a thiserror type instead" >&2
    fail=1
  fi
done

if [ "$fail" -ne 0 ]; then exit 1; fi
echo "check-deps: ok (pure: ${pure_crates[*]}; $model: thiserror only; no aws-lc/openssl; no anyhow in ${lib_crates[*]})"
