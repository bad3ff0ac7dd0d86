# Sourced by conformance scripts: an ephemeral PostgreSQL on a free loopback port, from the
# postgresql server binaries Debian installs under /usr/lib/postgresql/<version>/bin.
#
#   start_postgres <dir>   initdb + start in <dir>; exports CA_TEST_POSTGRES_URL
#   stop_postgres          immediate stop (safe to call when nothing was started)
#
# As root the server runs as the `postgres` user (initdb refuses root).

pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  local dir=$1
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "FATAL: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    return 1
  fi
  pg_data="$dir/data"
  mkdir -p "$dir"
  chmod 0755 "$(dirname "$dir")" "$dir"   # the postgres user must reach its data directory
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '==> starting PostgreSQL (%s) on 127.0.0.1:%s\n' "$pg_bin" "$port" >&2
  pg_as "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  pg_as "$pg_bin/pg_ctl" -D "$pg_data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
  export CA_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

stop_postgres() {
  if [ -n "${pg_data:-}" ] && [ -d "$pg_data" ]; then
    pg_as "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}
