#!/usr/bin/env bash
# Runs the reliability scenarios in their long form, on a release build, and keeps their figures.
# CI runs the same tests in a short form (conformance/run.sh); this is the command behind the
# numbers in docs/reliability.md.
#
#   conformance/scenarios/run.sh [test-name-filter]
#
# Knobs (defaults here are the long form; the tests' own defaults are the CI form):
#   CRASH_ROUNDS=10 CRASH_SECONDS=5 CRASH_WORKERS=16   SIGKILLs under Vault + ACME load
#   OVERLOAD_CLIENTS=1500 OVERLOAD_SECONDS=15          far more clients than max_in_flight
#   OUTAGE_SECONDS=10 OUTAGE_CLIENTS=32                PostgreSQL stopped under load
# Needs pebble-challtestsrv (Debian: pebble) and the PostgreSQL server binaries (Debian:
# postgresql); uses $CA_TEST_POSTGRES_URL when set, otherwise starts an ephemeral server.
# Each scenario prints one JSON line {"scenario": …, "figures": {…}}; they are collected in
# target/scenarios/results-<date>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work=$(mktemp -d -t ca-server-scenarios.XXXXXX)
source conformance/lib/postgres.sh
cleanup() { stop_postgres; rm -rf "$work"; }
trap cleanup EXIT

export CRASH_ROUNDS=${CRASH_ROUNDS:-10} CRASH_SECONDS=${CRASH_SECONDS:-5} CRASH_WORKERS=${CRASH_WORKERS:-16}
export OVERLOAD_CLIENTS=${OVERLOAD_CLIENTS:-1500} OVERLOAD_SECONDS=${OVERLOAD_SECONDS:-15}
export OUTAGE_SECONDS=${OUTAGE_SECONDS:-10} OUTAGE_CLIENTS=${OUTAGE_CLIENTS:-32}

command -v pebble-challtestsrv >/dev/null || { echo "pebble-challtestsrv missing: apt-get install pebble" >&2; exit 1; }
[ -n "${CA_TEST_POSTGRES_URL:-}" ] || start_postgres "$work/pg"

cargo build --release --locked -p ca-server --bins
export CA_SERVER_BIN="$root/target/release/ca-server"
out="$root/target/scenarios"; mkdir -p "$out"
results="$out/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"

set +e
cargo test --release --locked -p conformance --test scenarios --test reliability -- \
  --nocapture --test-threads=1 "$@" 2>&1 | tee "$work/log"
status=${PIPESTATUS[0]}
set -e
grep -a '^{"figures"\|^{"scenario"' "$work/log" > "$results" || true
echo "==> figures ($(wc -l < "$results") scenarios) in $results"
cat "$results"
[ "$status" = 0 ] || { echo "FAILED: a scenario failed (see the log above)" >&2; exit "$status"; }
