#!/usr/bin/env bash
# ACME benchmark: full issuances (account reuse, newOrder, http-01 validated against a real
# responder, finalize, download) against ca-server and against Pebble, same machine, same load.
# Usage: conformance/bench/acme.sh   (env: WORKERS=32 DURATION=20; ACCOUNT_KEY=rsa (RS256 accounts,
# as cert-manager and certbot; the default) or p256 (ES256, as lego); CA_SERVER_DATABASE_URL=
# postgres://… runs ca-server on PostgreSQL instead of the embedded SQLite ledger)
# Prints one JSON line per run; docs/benchmarks.md records them. A run that fails (the load
# generator exits non-zero: a refused request, a crash) prints {"failed": true, "exit": N}, one
# that does not finish in DURATION + 60 s prints {"timeout": true}; either makes the script exit
# 1 at the end, and a server that died stops it at once. ALLOW_PEBBLE_TIMEOUT=1 reports a Pebble
# stall (Pebble stalls under load) without failing. SKIP_PEER=1 measures ca-server alone (for
# iterating on a change; recorded figures come from full runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
source conformance/bench/lib.sh
WORKERS=${WORKERS:-32}
DURATION=${DURATION:-20}
ACCOUNT_KEY=${ACCOUNT_KEY:-rsa}
case "$ACCOUNT_KEY" in rsa|p256) ;; *) echo "ACCOUNT_KEY must be rsa or p256" >&2; exit 1 ;; esac
work=$(mktemp -d -t acme-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet -p ca-server -p conformance --bins

dns=$(port); mgmt=$(port); http01=$(port)
pebble-challtestsrv -dns01 127.0.0.1:$dns -management 127.0.0.1:$mgmt -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv6 "" >/dev/null 2>&1 &
pids+=($!); wait_port "$mgmt" "$!" pebble-challtestsrv

mkdir -p "$work/csr"
for i in $(seq 0 $((WORKERS - 1))); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=w$i.load.test" \
    -addext "subjectAltName=DNS:w$i.load.test" -outform DER -out "$work/csr/w$i.csr.der" 2>/dev/null
done
# RS256 account keys, as cert-manager and certbot use (ring, in the load generator, cannot make
# RSA keys); ACCOUNT_KEY=p256 gives each worker an ES256 key instead, as lego does.
if [ "$ACCOUNT_KEY" = rsa ]; then
  for i in $(seq 0 $((WORKERS - 1))); do
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null \
      | openssl pkcs8 -topk8 -nocrypt -outform DER -out "$work/csr/w$i.account.der"
  done
fi

# --- ca-server (embedded SQLite with certificates synchronous=FULL, or PostgreSQL) ----------
ca=$(port); ca_http=$(port)
cat > "$work/ca.toml" <<TOML
[acme.validation]
http01_port = $http01
dns_resolvers = ["127.0.0.1:$dns"]
TOML
"$bin/ca-server" serve --config "$work/ca.toml" --data-dir "$work/data" --listen 127.0.0.1:$ca --http-listen 127.0.0.1:$ca_http --log-level warn &
ca_pid=$!; pids+=($ca_pid); wait_port "$ca" "$ca_pid" ca-server
curl -sSf --max-time 20 "http://127.0.0.1:$ca_http/ca/bundle.pem" > "$work/bundle.pem"
# load SERVER_PID SERVER_NAME acme-load-args… (the last one the label): a bounded run, then the
# server must still be running (a crash during the load is not a slow run).
load() {
  local pid=$1 name=$2
  shift 2
  local label="${*: -1}" before n pg_before=""
  before=$(cpu_seconds "$pid")
  [ -n "${CA_SERVER_DATABASE_URL:-}" ] && [ "$name" = ca-server ] && pg_before=$(postgres_cpu_seconds)
  if run_bounded "$label" $((DURATION + 60)) "$bin/acme-load" --root "$work/bundle.pem" --http01-port "$http01" \
      --csr-dir "$work/csr" --account-key "$ACCOUNT_KEY" --seconds "$DURATION" "$@" > "$work/load.json"; then
    cat "$work/load.json"
    # A tolerated stall (ALLOW_PEBBLE_TIMEOUT) leaves no issuance count and no CPU figure.
    n=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1]).get("issuances", ""))' < "$work/load.json")
    if [ -n "$n" ]; then
      cpu_per_op "$label: server CPU per issuance" "$pid" "$before" "$n"
      # On PostgreSQL, the database's own CPU per issuance beside the server's.
      if [ -n "$pg_before" ]; then
        cpu_delta_per_op "$label: PostgreSQL CPU per issuance" "$pg_before" "$(postgres_cpu_seconds)" "$n"
      fi
    fi
  else
    cat "$work/load.json"
  fi
  if ! alive "$pid"; then
    echo "{\"label\": \"$name\", \"crashed\": true}"
    exit 1
  fi
}
db=${CA_SERVER_DATABASE_URL:+postgres}
db=${db:-sqlite}
load "$ca_pid" ca-server --server "https://localhost:$ca/acme/directory" --workers 1 --label "ca-server ($db, $ACCOUNT_KEY accounts), 1 worker"
load "$ca_pid" ca-server --server "https://localhost:$ca/acme/directory" --workers "$WORKERS" --label "ca-server ($db, $ACCOUNT_KEY accounts), $WORKERS workers"
peak_rss "$ca_pid" "ca-server peak RSS"
[ "${SKIP_PEER:-0}" = 1 ] && finish && exit 0

# --- Pebble (in memory; PEBBLE_VA_NOSLEEP=1, nonce rejection and authz reuse off) -----------
pb=$(port); pb_mgmt=$(port)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/pebble.key" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -out "$work/pebble.csr" 2>/dev/null
"$bin/ca-server" cert sign --data-dir "$work/data" --csr "$work/pebble.csr" --out "$work/pebble.crt" --log-level error
cat > "$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$pb", "managementListenAddress": "127.0.0.1:$pb_mgmt",
  "certificate": "$work/pebble.crt", "privateKey": "$work/pebble.key", "httpPort": $http01, "tlsPort": 5001,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 pebble -config "$work/pebble.json" -dnsserver 127.0.0.1:$dns >/dev/null 2>&1 &
pb_pid=$!; pids+=($pb_pid); wait_port "$pb" "$pb_pid" pebble
export TOLERATE_TIMEOUT=${ALLOW_PEBBLE_TIMEOUT:-0}
load "$pb_pid" pebble --server "https://localhost:$pb/dir" --workers 1 --label "pebble ($ACCOUNT_KEY accounts), 1 worker"
load "$pb_pid" pebble --server "https://localhost:$pb/dir" --workers "$WORKERS" --label "pebble ($ACCOUNT_KEY accounts), $WORKERS workers"
unset TOLERATE_TIMEOUT
peak_rss "$pb_pid" "pebble peak RSS"
finish
