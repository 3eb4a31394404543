#!/usr/bin/env bash
# Builds km's own container image from files on this machine (there is no
# registry): the km binary at /usr/local/bin/km, Debian's etcd at
# /usr/bin/etcd, a static busybox for a shell, and the shared libraries km
# needs. It is what the manifests in manifests/ call ${KM_IMAGE}, and what the
# cold-standby test runs as its three master hosts.
#
#   scripts/build-image.sh [TAG] [KM_BINARY]     (default km:dev, target/debug/km)
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-km:dev}"
km="${2:-target/debug/km}"
[ -x "$km" ] || { echo "build-image: $km is not an executable km binary (cargo build -p km)" >&2; exit 1; }
etcd="$(command -v etcd || true)"
[ -n "$etcd" ] || { echo "build-image: etcd not found (install etcd-server: scripts/install-deps.sh)" >&2; exit 1; }
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
  if [ -x "$candidate" ]; then busybox="$candidate"; break; fi
done
[ -n "$busybox" ] || { echo "build-image: busybox not found (install busybox-static)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/usr/local/bin" "$work/usr/bin" "$work/bin" "$work/tmp" "$work/etc" \
  "$work/proc" "$work/sys" "$work/dev" "$work/var/lib" "$work/var/log" "$work/run"
cp "$km" "$work/usr/local/bin/km"
cp "$etcd" "$work/usr/bin/etcd"
cp "$busybox" "$work/bin/busybox"
for applet in $("$work/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$work/bin/$applet"
done
# The dynamic loader and the libraries of km (etcd is static).
for lib in $(ldd "$km" | awk '/=>/ { print $3; next } $1 ~ /^\// { print $1 }'); do
  mkdir -p "$work$(dirname "$lib")"
  cp -L "$lib" "$work$lib"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$work/etc/passwd"
echo 'root:x:0:' > "$work/etc/group"
echo 'hosts: files dns' > "$work/etc/nsswitch.conf"
chmod 1777 "$work/tmp"
tar -C "$work" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'ENTRYPOINT ["/usr/local/bin/km"]' \
  - "$tag" >/dev/null
echo "built $tag"
