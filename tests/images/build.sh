#!/usr/bin/env bash
# Builds the images the pod-runtime tests use, from files on this machine
# (there is no registry): km-test/busybox:latest is a scratch image holding a
# static busybox (Debian package busybox-static) and one symlink per applet;
# km-test/pause:latest is the same files whose own command sleeps for ever, the
# stand-in for registry.k8s.io/pause as the pods' sandbox (pod infra) image.
# Idempotent: an image that already exists is left alone. Safe to run from
# several tests at once (a lock serialises the builds).
set -euo pipefail

image="km-test/busybox:latest"
pause="km-test/pause:latest"
exec 9>"${TMPDIR:-/tmp}/km-test-images.lock"
flock 9

if docker image inspect "$image" >/dev/null 2>&1 && docker image inspect "$pause" >/dev/null 2>&1; then
  exit 0
fi

# busybox-static installs /bin/busybox; a dynamically linked busybox would not
# run in a scratch image.
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
  if [ -x "$candidate" ]; then busybox="$candidate"; break; fi
done
if [ -z "$busybox" ]; then
  echo "tests/images/build.sh: busybox not found; install the Debian package busybox-static" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/tmp" "$work/etc" "$work/proc" "$work/sys" "$work/dev" "$work/www"
cp "$busybox" "$work/bin/busybox"
for applet in $("$work/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$work/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$work/etc/passwd"
echo 'root:x:0:' > "$work/etc/group"
echo 'km test page' > "$work/www/index.html"
chmod 1777 "$work/tmp"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  tar -C "$work" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'CMD ["sh"]' \
    - "$image" >/dev/null
  echo "built $image" >&2
fi
if ! docker image inspect "$pause" >/dev/null 2>&1; then
  tar -C "$work" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'ENTRYPOINT ["/bin/sleep", "2147483647"]' \
    - "$pause" >/dev/null
  echo "built $pause" >&2
fi
