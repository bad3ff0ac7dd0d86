#!/usr/bin/env bash
# Sign-endpoint benchmark: distinct P-256 CSRs, many concurrent clients, against ca-server's
# Vault-compatible sign endpoint (token auth, every certificate durably recorded) and against
# `cfssl serve` (Debian golang-cfssl, which stores nothing), same machine, same load.
# Usage: conformance/bench/sign.sh   (env: WORKERS=64 DURATION=20 CSRS=80000; CA_SERVER_DATABASE_URL=
# postgres://… runs ca-server on that PostgreSQL database and reports the CPU of every `postgres`
# process on this machine per signing beside the server's: a local server only)
# Prints one JSON line per run. A load that fails (sign-load exits non-zero on any answer but
# 200) or does not finish in DURATION + 120 s is reported as such and fails the script; so does a
# ledger holding fewer rows than the signings reported.
set -euo pipefail
cd "$(dirname "$0")/../.."
source conformance/bench/lib.sh
WORKERS=${WORKERS:-64}
DURATION=${DURATION:-20}
CSRS=${CSRS:-80000}
work=$(mktemp -d -t sign-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
command -v cfssl >/dev/null || { echo "cfssl missing: apt-get install golang-cfssl" >&2; exit 1; }
if [ -n "${CA_SERVER_DATABASE_URL:-}" ]; then
  command -v psql >/dev/null || { echo "psql missing: apt-get install postgresql-client" >&2; exit 1; }
  ledger_rows() { psql -X -qtA "$CA_SERVER_DATABASE_URL" -c 'select count(*) from certificates'; }
else
  command -v sqlite3 >/dev/null || { echo "sqlite3 missing: apt-get install sqlite3" >&2; exit 1; }
  ledger_rows() { sqlite3 "$work/data/ledger.db" 'select count(*) from certificates'; }
fi

cargo build --release --quiet -p ca-server -p conformance --bins
limit=$((DURATION + 120))

# --- ca-server -------------------------------------------------------------------------------
ca=$(port); ca_http=$(port)
"$bin/ca-server" serve --data-dir "$work/data" --listen 127.0.0.1:$ca --http-listen 127.0.0.1:$ca_http --log-level warn &
ca_pid=$!; pids+=($ca_pid); wait_port "$ca" "$ca_pid" ca-server
curl -sSf --max-time 20 "http://127.0.0.1:$ca_http/ca/bundle.pem" > "$work/bundle.pem"
root_token=$(cat "$work/data/root-token")
api() { curl -sSf --max-time 20 --cacert "$work/bundle.pem" -H "X-Vault-Token: $root_token" "$@"; }
api -X POST -d '{"allowed_domains":"bench.svc.cluster.local","allow_subdomains":true,"key_type":"ec","ttl":"24h"}' \
  "https://localhost:$ca/v1/pki_int/roles/bench" >/dev/null
api -X PUT -d '{"policy":"path \"pki_int/sign/bench\" { capabilities = [\"update\"] }"}' "https://localhost:$ca/v1/sys/policy/bench"
token=$(api -X POST -d '{"policies":["bench"],"ttl":"1h"}' "https://localhost:$ca/v1/auth/token/create" | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])')
rows_before=$(ledger_rows)
ca_cpu=$(cpu_seconds "$ca_pid")
pg_cpu=""
[ -n "${CA_SERVER_DATABASE_URL:-}" ] && pg_cpu=$(postgres_cpu_seconds)
if run_bounded "ca-server sign" "$limit" "$bin/sign-load" --target vault --url "https://localhost:$ca" \
     --root "$work/bundle.pem" --token "$token" --path pki_int/sign/bench --workers "$WORKERS" \
     --seconds "$DURATION" --csrs "$CSRS" > "$work/vault-load.json"; then
  cat "$work/vault-load.json"
  alive "$ca_pid" || { echo '{"label": "ca-server", "crashed": true}'; exit 1; }
  peak_rss "$ca_pid" "ca-server peak RSS"
  # Every signing answered 200 is in the ledger.
  signings=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["signings"])' < "$work/vault-load.json")
  cpu_per_op "ca-server CPU per stored signature" "$ca_pid" "$ca_cpu" "$signings"
  if [ -n "$pg_cpu" ]; then
    cpu_delta_per_op "PostgreSQL CPU per stored signature" "$pg_cpu" "$(postgres_cpu_seconds)" "$signings"
  fi
  # Rows this load added (not the serving certificate; a PostgreSQL database may also hold
  # earlier runs' rows).
  count=$(( $(ledger_rows) - rows_before ))
  echo "{\"label\": \"ca-server ledger rows\", \"rows\": $count, \"signings\": $signings}"
  [ "$count" -ge "$signings" ] || { echo "the ledger has $count rows for $signings signings" >&2; exit 1; }
else
  cat "$work/vault-load.json"
  alive "$ca_pid" || { echo '{"label": "ca-server", "crashed": true}'; exit 1; }
fi

# --- cfssl serve (ECDSA P-256 CA, TLS with a certificate from ca-server) --------------------
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/cfssl-ca.key" \
  -subj "/CN=cfssl bench CA" -days 2 -addext basicConstraints=critical,CA:TRUE -out "$work/cfssl-ca.pem" 2>/dev/null
openssl ec -in "$work/cfssl-ca.key" -out "$work/cfssl-ca-sec1.key" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/cfssl-tls.key" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -out "$work/cfssl-tls.csr" 2>/dev/null
"$bin/ca-server" cert sign --data-dir "$work/data" --csr "$work/cfssl-tls.csr" --out "$work/cfssl-tls.pem" --log-level error
openssl ec -in "$work/cfssl-tls.key" -out "$work/cfssl-tls-sec1.key" 2>/dev/null
cat > "$work/cfssl.json" <<JSON
{"signing": {"default": {"expiry": "24h", "usages": ["digital signature", "server auth"]}}}
JSON
cf=$(port)
cfssl serve -address 127.0.0.1 -port "$cf" -ca "$work/cfssl-ca.pem" -ca-key "$work/cfssl-ca-sec1.key" -config "$work/cfssl.json" \
  -tls-cert "$work/cfssl-tls.pem" -tls-key "$work/cfssl-tls-sec1.key" >/dev/null 2>&1 &
cf_pid=$!; pids+=($cf_pid); wait_port "$cf" "$cf_pid" cfssl
cf_cpu=$(cpu_seconds "$cf_pid")
if run_bounded "cfssl sign" "$limit" "$bin/sign-load" --target cfssl --url "https://localhost:$cf" --root "$work/bundle.pem" \
  --workers "$WORKERS" --seconds "$DURATION" --csrs "$CSRS" > "$work/cfssl-load.json"; then
  cat "$work/cfssl-load.json"
  cf_signings=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["signings"])' < "$work/cfssl-load.json")
  cpu_per_op "cfssl CPU per signature (not stored)" "$cf_pid" "$cf_cpu" "$cf_signings"
else
  cat "$work/cfssl-load.json"
fi
alive "$cf_pid" || { echo '{"label": "cfssl", "crashed": true}'; exit 1; }
peak_rss "$cf_pid" "cfssl peak RSS"
finish
