#!/usr/bin/env bash
# Fuzzes every parser that reads hostile bytes (ca-server/tests/fuzz.rs: JWS, CSR, Vault request
# decoding, ACL policies, SPIFFE IDs, names and durations, role globs, files `ledger observe`
# reads) for a time budget each, on a release build. Not part of CI: CI replays the stored
# regressions and a few hundred cases per target.
#
#   conformance/scenarios/fuzz.sh [target-filter]     (env: FUZZ_SECONDS=60 per target)
#
# Each target prints {"fuzz": …, "executions": …, "accepted": …, "seconds": …, "slowest_ms": …};
# the lines are collected in target/fuzz/results-<date>.jsonl. A failing case is shrunk, its seed
# stored in ca-server/tests/fuzz.regressions (commit it), and the run fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FUZZ_SECONDS=${FUZZ_SECONDS:-60}
out=target/fuzz; mkdir -p "$out"
results="$out/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
log=$(mktemp -t fuzz-log.XXXXXX)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --locked -p ca-server --test fuzz -- --nocapture --test-threads=1 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
grep -ao '{"accepted".*}' "$log" > "$results" || true
echo "==> $(wc -l < "$results") targets, figures in $results"
cat "$results"
exit "$status"
