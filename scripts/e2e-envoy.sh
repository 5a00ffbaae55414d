#!/usr/bin/env bash
# e2e-envoy.sh — the demo flow against a real Envoy running envoy.yaml.
#
#   scripts/e2e-envoy.sh                 validate envoy.yaml, then run the flow
#   scripts/e2e-envoy.sh --no-envoy      everything that needs no Envoy: demo PKI,
#                                        sidecar start, CA and outbound certificate
#                                        upload (checks this script and the CLI)
#
# Needs build/mtlsgate and build/mtlsgate.wasm (make build), curl and openssl.
# Without an envoy binary on PATH it says so and exits 0: CI machines here cannot
# install Envoy, and envoy.yaml is still validated against Envoy's protos by
# `go test ./deploy/...`.
#
# Ports: Envoy 8443 (listener) and 9901 (admin), the sidecar 9911-9913 (its
# defaults, passed explicitly as in envoy.yaml), the demo backend 9443.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=full
case "${1:-}" in
  "") ;;
  --no-envoy) mode=no-envoy ;;
  *) echo "usage: $0 [--no-envoy]" >&2; exit 2 ;;
esac

if [[ $mode == full ]] && ! command -v envoy >/dev/null 2>&1; then
  echo "e2e-envoy: skipped — no envoy binary on PATH (install an Envoy with the v8 wasm runtime whose proxy-wasm-cpp-host includes PR #533 (March 2026; older builds refuse the module for missing WASI imports, see the README's Envoy version note), and re-run; envoy.yaml is still validated by go test ./deploy/...)"
  exit 0
fi
for tool in curl openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "e2e-envoy: $tool is required" >&2; exit 1; }
done
needs=(build/mtlsgate)
[[ $mode == full ]] && needs+=(build/mtlsgate.wasm)
for f in "${needs[@]}"; do
  [[ -e $repo/$f ]] || { echo "e2e-envoy: $repo/$f missing; run make build first" >&2; exit 1; }
done

SDS=127.0.0.1:9912 BUNDLE=127.0.0.1:9913 ADMIN=127.0.0.1:9911
BACKEND_PORT=9443 LISTENER=https://localhost:8443

# Envoy resolves envoy.yaml's relative paths (build/, certs/) against its working
# directory, so it runs in a scratch directory holding both.
work=$(mktemp -d "${TMPDIR:-/tmp}/mtlsgate-e2e.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $rc -ne 0 ]]; then
    for log in sidecar.log envoy.log backend.log; do
      [[ -s $work/$log ]] && { echo "--- $log (last 40 lines)"; tail -n 40 "$work/$log"; }
    done
    echo "e2e-envoy: FAILED (logs above; scratch directory kept: $work)"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
cd "$work"
mkdir certs pki
ln -s "$repo/build" build
mg() { "$repo/build/mtlsgate" "$@"; }

# ---- demo PKI -------------------------------------------------------------
ssl() { openssl "$@" 2>>openssl.log; }
ext_ca="basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash"
ext_client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid"
ext_server="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:backend.local"

newkey() { ssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
root() { # root NAME CN
  newkey "pki/$1.key"
  ssl req -x509 -new -key "pki/$1.key" -subj "/CN=$2" -days 30 -out "pki/$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() { # leaf NAME CN ISSUER EXT
  newkey "pki/$1.key"
  ssl req -new -key "pki/$1.key" -subj "/CN=$2" -out "pki/$1.csr"
  ssl x509 -req -in "pki/$1.csr" -CA "pki/$3.pem" -CAkey "pki/$3.key" -CAcreateserial \
    -days 7 -extfile <(echo "$4") -out "pki/$1.pem"
}
# An expired leaf needs a notAfter in the past, which only `openssl ca` sets.
expired_leaf() { # expired_leaf NAME CN ISSUER
  newkey "pki/$1.key"
  ssl req -new -key "pki/$1.key" -subj "/CN=$2" -out "pki/$1.csr"
  mkdir -p pki/ca-db && : >pki/ca-db/index && echo 1000 >pki/ca-db/serial
  cat >pki/ca.cnf <<EOF
[ca]
default_ca=demo
[demo]
dir=pki/ca-db
database=\$dir/index
serial=\$dir/serial
new_certs_dir=\$dir
default_md=sha256
policy=any
x509_extensions=client
[any]
commonName=supplied
[client]
$ext_client
EOF
  ssl ca -batch -config pki/ca.cnf -cert "pki/$3.pem" -keyfile "pki/$3.key" -in "pki/$1.csr" \
    -startdate 20200101000000Z -enddate 20200201000000Z -out "pki/$1.pem"
}

root demo_ca "mtlsgate demo CA"
root other_ca "some other CA"
root backend_ca "backend client CA"
leaf good "good-client" demo_ca "$ext_client"
leaf wrong "wrong-ca-client" other_ca "$ext_client"
expired_leaf expired "expired-client" demo_ca
leaf outbound "envoy-to-backend" backend_ca "$ext_client"
leaf server "localhost" demo_ca "$ext_server"
cp pki/server.pem certs/server.pem
cp pki/server.key certs/server.key
# The backend serves the same certificate; envoy.yaml verifies it against its issuer.
cp pki/demo_ca.pem certs/backend-ca.pem
echo "e2e-envoy: demo PKI ready"

# ---- sidecar ----------------------------------------------------------------
mg serve --data-dir data --sds-listen "$SDS" --bundle-listen "$BUNDLE" --admin-listen "$ADMIN" \
  >sidecar.out 2>sidecar.log &
pids+=($!)
for _ in $(seq 100); do [[ -s sidecar.out && -s data/admin-token ]] && break; sleep 0.1; done
[[ -s sidecar.out ]] || { echo "e2e-envoy: sidecar did not start" >&2; exit 1; }
cli=(--server "http://$ADMIN" --admin-token-file data/admin-token)
mg ca-certificate create --name demo_ca --cert pki/demo_ca.pem "${cli[@]}"
# Envoy presents this to the backend; the SDS secret name is the certificate's name,
# which envoy.yaml's backend cluster asks for.
mg mtls-certificate create --name backend_client_cert --cert pki/outbound.pem --key pki/outbound.key \
  --environment-type development "${cli[@]}"
curl -fsS "http://$BUNDLE/v1/bundle" | grep -q '"caCertificates"' ||
  { echo "e2e-envoy: bundle endpoint does not serve the uploaded CA" >&2; exit 1; }
echo "e2e-envoy: sidecar serving the demo CA and backend_client_cert"

if [[ $mode == no-envoy ]]; then
  echo "e2e-envoy: --no-envoy: stopping before Envoy"
  exit 0
fi

# ---- Envoy ------------------------------------------------------------------
envoy --mode validate -c "$repo/envoy.yaml" >validate.log 2>&1 ||
  { cat validate.log; echo "e2e-envoy: envoy --mode validate rejected envoy.yaml" >&2; exit 1; }
echo "e2e-envoy: envoy --mode validate: OK"

# The backend requires the client certificate Envoy gets over SDS, so a 200 also
# proves the outbound secret arrived.
openssl s_server -accept "$BACKEND_PORT" -www -quiet -cert pki/server.pem -key pki/server.key \
  -Verify 1 -CAfile pki/backend_ca.pem >backend.log 2>&1 &
pids+=($!)

envoy -c "$repo/envoy.yaml" --log-level warn --base-id $((RANDOM % 1000 + 1)) >envoy.log 2>&1 &
pids+=($!)
for _ in $(seq 150); do
  [[ $(curl -s http://127.0.0.1:9901/ready 2>/dev/null) == LIVE ]] && break
  sleep 0.2
done
[[ $(curl -s http://127.0.0.1:9901/ready) == LIVE ]] || { echo "e2e-envoy: envoy not ready (listener waiting for SDS?)" >&2; exit 1; }

request() { # request NAME [curl args...] -> prints the status, body in NAME.body
  local name=$1; shift
  curl -s --cacert pki/demo_ca.pem -o "$name.body" -D "$name.headers" -w '%{http_code}' "$@" "$LISTENER/" || true
}

# The filter loads the bundle on its first tick; allow it a few seconds.
status=000
for _ in $(seq 50); do
  status=$(request good --cert pki/good.pem --key pki/good.key)
  [[ $status == 200 ]] && break
  sleep 0.2
done

failed=0
expect() { # expect NAME GOT WANT
  if [[ $2 == "$3" ]]; then
    echo "e2e-envoy: ok   $1 -> $2"
  else
    echo "e2e-envoy: FAIL $1 -> $2, want $3"
    [[ -f $1.body ]] && head -c 400 "$1.body" && echo
    failed=1
    return 1
  fi
}
denied() { # denied NAME: a 401 with a problem+json body naming a reason
  grep -qi '^content-type: application/problem+json' "$1.headers" && grep -q '"reason"' "$1.body" ||
    { echo "e2e-envoy: FAIL $1: denial is not application/problem+json with a reason"; failed=1; }
}
expect good "$status" 200 || true
{ expect no-cert "$(request no-cert)" 401 && denied no-cert; } || true
{ expect wrong-ca "$(request wrong-ca --cert pki/wrong.pem --key pki/wrong.key)" 401 && denied wrong-ca; } || true
{ expect expired "$(request expired --cert pki/expired.pem --key pki/expired.key)" 401 && denied expired; } || true
# A client cannot smuggle an identity past SANITIZE_SET and the filter.
expect spoofed-xfcc "$(request spoofed-xfcc -H 'x-forwarded-client-cert: Hash=00;Subject="CN=admin"' -H 'x-mtls-subject: CN=admin')" 401 || true

[[ $failed == 0 ]] || exit 1
echo "e2e-envoy: PASS"
