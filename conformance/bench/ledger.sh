#!/usr/bin/env bash
# Ledger benchmark: 1,000,000 certificates seeded through the store's write path, then the first
# page of "expiring within 7 days" (store query, and over HTTP) and full /metrics scrapes, on
# SQLite and on PostgreSQL (an ephemeral server, as in the test suite).
# Usage: conformance/bench/ledger.sh   (env: ROWS=1000000 SCRAPES=30 LOAD_TIMEOUT=3600)
# Every timed request must answer 200 (a 404, a 500 or a refused connection fails the script
# instead of being timed as a fast answer); the API is asked over HTTPS with a token, as clients
# do (the plain-HTTP listener serves no /v1). Seeding that fails or outlasts LOAD_TIMEOUT is
# reported as such and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../.."
source conformance/bench/lib.sh
ROWS=${ROWS:-1000000}
SCRAPES=${SCRAPES:-30}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-3600}
work=$(mktemp -d -t ledger-bench.XXXXXX)
chmod 0755 "$work"
pids=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$work/pg/data" ] && as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet -p ca-server -p conformance --bins

measure() { # $1 = label, $2 = data dir, $3 = database URL
  # The CA first: a database that already holds certificates belongs to a CA, and serve refuses
  # to make a new one for it.
  "$bin/ca-server" init --data-dir "$2" --database-url "$3" --log-level warn
  run_bounded "$1 seeding $ROWS rows" "$LOAD_TIMEOUT" "$bin/ledger-load" --database-url "$3" --rows "$ROWS" || exit 1
  local https http pid m token bundle="$2/bundle.pem"
  https=$(port); http=$(port)
  # Retention would start dropping DER of the seeded year's expired rows at start-up; keep the
  # scrape figures about scrapes (retention's own cost is chunked, see docs/ledger.md).
  printf '[retention]\ndrop_der_after = "0s"\n' > "$2/bench.toml"
  "$bin/ca-server" serve --config "$2/bench.toml" --data-dir "$2" --database-url "$3" --listen 127.0.0.1:"$https" \
    --http-listen 127.0.0.1:"$http" --log-level warn &
  pid=$!; pids+=($pid)
  wait_port "$https" "$pid" "ca-server ($1)"
  curl -sSf --max-time 20 "http://127.0.0.1:$http/ca/bundle.pem" > "$bundle"
  m=$(timed "$2/metrics.txt" "$SCRAPES" "http://127.0.0.1:$http/metrics" | summary)
  echo "$1 /metrics: $m"
  echo "$1 /metrics size: $(wc -c < "$2/metrics.txt") bytes, $(grep -c '^ca_certificate_not_after' "$2/metrics.txt" || true) per-certificate series"
  token=$(cat "$2/root-token")
  m=$(timed "$2/page.json" "$SCRAPES" --cacert "$bundle" -H "X-Vault-Token: $token" \
    "https://localhost:$https/v1/ledger/certificates?within=168h" | summary)
  echo "$1 GET /v1/ledger/certificates?within=168h: $m"
  alive "$pid" || { echo "ca-server ($1) died during the measurement" >&2; exit 1; }
  # Stopped before the next measurement, which would otherwise share the CPU with it.
  kill "$pid"; wait "$pid" || true
}

mkdir -m 0700 "$work/sqlite"
measure SQLite "$work/sqlite" "sqlite://$work/sqlite/ledger.db"

mkdir -p "$work/pg" && mkdir -m 0700 "$work/pgdata-ca"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
pg_port=$(port)
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -t 60 -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
measure PostgreSQL "$work/pgdata-ca" "postgres://postgres@127.0.0.1:$pg_port/postgres"
finish
