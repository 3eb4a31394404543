#!/usr/bin/env bash
# Installs the system packages km's build and tests need, when missing:
#   protoc (Debian protobuf-compiler, with libprotobuf-dev's well-known types) for the etcd client's and km's protos,
#   etcd (Debian etcd-server) for the podmaster and API server tests,
#   kubectl (Debian kubernetes-client) as an outside client of km apiserver,
#   the Python Kubernetes client (Debian python3-kubernetes) as another one,
#   for tests/python/client.py,
#   a static busybox (Debian busybox-static) from which the pod-runtime tests
#   build their Docker images (there is no registry), unzip for the agent's
#   fetcher, and Debian's chromium with chromium-driver (chromedriver) for the
#   web UI tests in headless Chromium.
# Idempotent; runs apt-get only if something is absent.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The well-known types (google/protobuf/duration.proto, ...) are only a
# recommendation of protobuf-compiler, and apt runs without recommends here.
[ -f /usr/include/google/protobuf/duration.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
# Debian's package goes into Debian's python3, which need not be the first
# python3 on PATH (pyenv, a virtualenv); tests/e2e/python_client.rs looks there too.
/usr/bin/python3 -c 'import kubernetes' >/dev/null 2>&1 || need+=(python3-kubernetes)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# The cold-standby test builds its master hosts from network namespaces and a bridge.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# The web UI tests drive headless Chromium through WebDriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if ((${#need[@]})); then
  echo "install-deps: installing ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged etcd as a service; km's tests start their own.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now etcd >/dev/null 2>&1 || true; fi
fi

# kubectl 1.20 from Debian's kubernetes-client, unpacked beside whatever
# kubectl the machine has (an image may carry another version in a package
# that conflicts with kubernetes-client). tests/kubectl/scenario.sh uses it.
kubectl120=/opt/km-tools/kubernetes-client/usr/bin/kubectl
if [ ! -x "$kubectl120" ]; then
  echo "install-deps: unpacking kubectl 1.20 (kubernetes-client) into /opt/km-tools" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  dl=$(mktemp -d)
  (cd "$dl" && { apt-get download kubernetes-client >/dev/null 2>&1 || { $sudo apt-get update -qq && apt-get download kubernetes-client >/dev/null; }; })
  $sudo mkdir -p /opt/km-tools/kubernetes-client
  $sudo dpkg -x "$dl"/kubernetes-client_*.deb /opt/km-tools/kubernetes-client
  rm -rf "$dl"
fi

command -v cargo >/dev/null 2>&1 || { echo "install-deps: cargo (Rust) is required" >&2; exit 1; }
