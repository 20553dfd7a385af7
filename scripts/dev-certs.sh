#!/usr/bin/env bash
# Dev-only TLS material for docker-compose.tls.yml (and a dev cluster's
# gauntlet-tls Secret): a CA and one certificate that every Gauntlet service
# presents both as a server and as a client (mutual TLS).
#
#   scripts/dev-certs.sh [DIR]          DIR defaults to deploy/tls/dev (git-ignored)
#
# Writes DIR/ca.crt, DIR/ca.key (the CA), DIR/tls.crt and DIR/tls.key (the
# services' certificate, SANs: the service names gateway, worker, analytics,
# reports, monitor, plus localhost and 127.0.0.1), replacing what is there.
# Extra SANs, e.g. for an Ingress host or the names in another namespace:
#
#   EXTRA_SANS="DNS:gauntlet.example.com,DNS:gateway.gauntlet.svc" scripts/dev-certs.sh
#
# tls.key is left world-readable: the containers run as uid 10001 and read it
# through a bind mount. ca.key stays private to you and is not mounted.
# Never use these in production.
set -euo pipefail

dir=${1:-deploy/tls/dev}
days=${DAYS:-365}
services=(gateway worker analytics reports monitor)

command -v openssl >/dev/null || {
  echo "dev-certs.sh: openssl not found" >&2
  exit 1
}

mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# openssl, quiet unless it fails.
ossl() {
  if ! openssl "$@" >"$work/out" 2>&1; then
    echo "dev-certs.sh: openssl $1 failed:" >&2
    cat "$work/out" >&2
    exit 1
  fi
}

sans=""
for s in "${services[@]}"; do sans+="DNS:$s,"; done
sans+="DNS:localhost,IP:127.0.0.1"
if [ -n "${EXTRA_SANS:-}" ]; then sans+=",$EXTRA_SANS"; fi

# The CA: EC P-256, CA:TRUE, signs certificates only.
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/ca.key" -out "$work/ca.crt" -days "$days" \
  -subj "/CN=Gauntlet dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash"

# The services' certificate: server and client, for every service name.
ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=gauntlet"
cat >"$work/tls.ext" <<EXT
subjectAltName=$sans
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EXT
ossl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days "$days" \
  -extfile "$work/tls.ext" -out "$work/tls.crt"

ossl verify -CAfile "$work/ca.crt" "$work/tls.crt"

install -m 0644 "$work/ca.crt" "$dir/ca.crt"
install -m 0600 "$work/ca.key" "$dir/ca.key"
install -m 0644 "$work/tls.crt" "$dir/tls.crt"
install -m 0644 "$work/tls.key" "$dir/tls.key"

echo "wrote $dir/ca.crt   CA certificate (GAUNTLET_GRPC__TLS_CA, the CLI's --ca-cert)"
echo "wrote $dir/ca.key   CA private key (keep; not mounted)"
echo "wrote $dir/tls.crt  service certificate (GAUNTLET_GRPC__TLS_CERT), SANs: $sans"
echo "wrote $dir/tls.key  its private key (GAUNTLET_GRPC__TLS_KEY)"
echo "valid for $days days"
