#!/usr/bin/env bash
# Makes the certificates and credentials of a km cluster whose components talk to the API
# servers over HTTPS with least privilege (manifests/README.md):
#
#   scripts/make-pki.sh DIR SERVER_URL ADDRESS...
#
# DIR gets: ca.crt/ca.key (the cluster's authority; keep ca.key off the nodes),
# apiserver.crt/.key (for every ADDRESS: IPs or DNS names of the API servers and their load
# balancer), sa.key (signs ServiceAccount tokens; the same on every API server), and a client
# certificate with a kubeconfig (server SERVER_URL) for each identity:
#   admin                  O=system:masters                   (the cluster administrator)
#   scheduler              CN=system:km-scheduler             (km scheduler)
#   controller-manager     CN=system:km-controller-manager    (km controller-manager)
#   node                   CN=system:node:km, O=system:nodes  (km executors on the agents)
# Existing files are kept, so it can run again to add nothing.
set -euo pipefail
dir=${1:?usage: make-pki.sh DIR SERVER_URL ADDRESS...}
server=${2:?usage: make-pki.sh DIR SERVER_URL ADDRESS...}
shift 2
[ $# -gt 0 ] || { echo "make-pki.sh: name at least one API server address" >&2; exit 2; }
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" 2>/dev/null || { echo "make-pki.sh: failed: $*" >&2; exit 1; }; }
if [ ! -f ca.crt ]; then
  quiet openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=km-ca -keyout ca.key -out ca.crt
fi
if [ ! -f apiserver.crt ]; then
  sans=""
  for a in "$@" 127.0.0.1; do
    if [[ $a =~ ^[0-9.]+$ || $a == *:* ]]; then sans+="IP:$a,"; else sans+="DNS:$a,"; fi
  done
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "${sans%,}" >apiserver.cnf
  quiet openssl req -newkey rsa:2048 -nodes -subj /CN=km-apiserver -keyout apiserver.key -out apiserver.csr
  quiet openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile apiserver.cnf -out apiserver.crt
fi
[ -f sa.key ] || quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.cnf
client() { # name subject
  [ -f "$1.crt" ] && return
  quiet openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
  quiet openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.cnf -out "$1.crt"
  cat >"$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: km
  cluster:
    server: $server
    certificate-authority: $PWD/ca.crt
users:
- name: $1
  user:
    client-certificate: $PWD/$1.crt
    client-key: $PWD/$1.key
contexts:
- name: km
  context:
    cluster: km
    user: $1
current-context: km
KC
}
client admin '/O=system:masters/CN=km-admin'
client scheduler '/CN=system:km-scheduler'
client controller-manager '/CN=system:km-controller-manager'
client node '/O=system:nodes/CN=system:node:km'
rm -f ./*.csr
chmod 600 ./*.key
