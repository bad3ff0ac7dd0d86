#!/usr/bin/env bash
# Ledger benchmark: 1,000,000 certificates seeded through the store's write path, then the first
# page of "expiring within 7 days" (store query, and over HTTP) and full /metrics scrapes, on
# SQLite and on PostgreSQL (an ephemeral server, as in the test suite).
# Usage: conformance/bench/ledger.sh   (env: ROWS=1000000 SCRAPES=30)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
ROWS=${ROWS:-1000000}
SCRAPES=${SCRAPES:-30}
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
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }
times() { sort -n | awk '{a[NR]=$1*1000} END {printf "median %.1f ms, p90 %.1f ms, max %.1f ms\n", a[int(NR/2)+1], a[int(NR*0.9)], a[NR]}'; }

cargo build --release --quiet -p ca-server -p conformance --bins
bin="$root/target/release"

measure() { # $1 = label, $2 = data dir, $3 = database URL
  "$bin/ledger-load" --database-url "$3" --rows "$ROWS"
  local http; http=$(port)
  # Retention would start dropping DER of the seeded year's expired rows at start-up; keep the
  # scrape figures about scrapes (retention's own cost is chunked, see docs/ledger.md).
  printf '[retention]\ndrop_der_after = "0s"\n' > "$2/bench.toml"
  "$bin/ca-server" serve --config "$2/bench.toml" --data-dir "$2" --database-url "$3" --listen 127.0.0.1:"$(port)" \
    --http-listen 127.0.0.1:"$http" --log-level warn & pids+=($!)
  wait_port "$http"
  echo "$1 /metrics: $(for _ in $(seq "$SCRAPES"); do curl -s -o "$2/metrics.txt" -w '%{time_total}\n' "http://127.0.0.1:$http/metrics"; done | times)"
  echo "$1 /metrics size: $(wc -c < "$2/metrics.txt") bytes, $(grep -c '^ca_certificate_not_after' "$2/metrics.txt") per-certificate series"
  local token; token=$(cat "$2/root-token")
  echo "$1 GET /v1/ledger/certificates?within=168h: $(for _ in $(seq "$SCRAPES"); do curl -s -o /dev/null -w '%{time_total}\n' -H "X-Vault-Token: $token" "http://127.0.0.1:$http/v1/ledger/certificates?within=168h"; done | times)"
}

mkdir -p "$work/sqlite"
measure SQLite "$work/sqlite" "sqlite://$work/sqlite/ledger.db"

mkdir -p "$work/pg" "$work/pgdata-ca"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
pg_port=$(port)
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
measure PostgreSQL "$work/pgdata-ca" "postgres://postgres@127.0.0.1:$pg_port/postgres"
