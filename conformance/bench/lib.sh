# Sourced by the benchmark scripts (acme.sh, sign.sh, ledger.sh): every run bounded in time and
# checked, so a failed run fails the script instead of printing a figure, and a timeout is told
# apart from a crash.
#
#   port                          a free loopback TCP port
#   alive PID                     the process runs (not exited, not a zombie)
#   wait_port PORT PID LABEL      until PORT accepts connections; exits 1 at once if PID died
#   run_bounded LABEL LIMIT CMD…  runs CMD for at most LIMIT s; on a timeout prints
#                                 {"label", "timeout": true} and on any other failure
#                                 {"label", "failed": true, "exit"}, sets failed=1, returns 1
#                                 (TOLERATE_TIMEOUT=1: a timeout is reported, not a failure)
#   peak_rss PID LABEL            {"label", "kib"} from VmHWM, or {"label", "error"} and failed=1
#   timed OUT N CURL_ARGS…        N requests; each must answer 200 (else a message, return 1);
#                                 prints each time_total; the last body is left in OUT
#   summary                       median/p90/max of the times on stdin, in ms
#   cpu_seconds PID               the process's CPU time so far (user + system), in seconds
#   cpu_per_op LABEL PID BEFORE N {"label", "cpu_seconds", "operations", "cpu_us_per_op"}: the CPU
#                                 PID spent since BEFORE (a cpu_seconds reading) per operation
#   postgres_cpu_seconds          the CPU time of every running `postgres` process (the server and
#                                 its backends), for the database's own cost per operation
#   finish                        exits with 1 if anything failed
#
# Callers use `set -euo pipefail`; `bin` is where cargo put the release binaries (it honours
# CARGO_TARGET_DIR).

failed=0
bin="${CARGO_TARGET_DIR:-$(pwd)/target}/release"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

alive() {
  local state
  state=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != Z ]
}

wait_port() {
  local port=$1 pid=$2 label=$3
  for _ in $(seq 200); do
    alive "$pid" || { echo "$label (pid $pid) exited before listening on port $port" >&2; exit 1; }
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$label (pid $pid) never opened port $port" >&2
  exit 1
}

run_bounded() {
  local label=$1 limit=$2 rc=0 started elapsed
  shift 2
  started=$(date +%s)
  timeout -k 10 "$limit" "$@" || rc=$?
  elapsed=$(( $(date +%s) - started ))
  [ "$rc" = 0 ] && return 0
  # 124: timeout stopped it; 137 after the limit: it had to be killed. A 137 before the limit
  # is a SIGKILL from elsewhere (the OOM killer): a crash.
  if [ "$rc" = 124 ] || { [ "$rc" = 137 ] && [ "$elapsed" -ge "$limit" ]; }; then
    echo "{\"label\": \"$label\", \"timeout\": true, \"limit_seconds\": $limit}"
    [ "${TOLERATE_TIMEOUT:-0}" = 1 ] && return 0
  else
    echo "{\"label\": \"$label\", \"failed\": true, \"exit\": $rc}"
  fi
  failed=1
  return 1
}

peak_rss() {
  local kib
  kib=$(awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || true)
  if [ -n "$kib" ]; then
    echo "{\"label\": \"$2\", \"kib\": $kib}"
  else
    echo "{\"label\": \"$2\", \"error\": \"process $1 exited\"}"
    failed=1
  fi
}

timed() {
  local out=$1 n=$2 said
  shift 2
  for _ in $(seq "$n"); do
    said=$(curl -sS --max-time 120 -o "$out" -w '%{http_code} %{time_total}' "$@") \
      || { echo "curl failed: $*" >&2; return 1; }
    if [ "${said%% *}" != 200 ]; then
      echo "HTTP ${said%% *} from $*: $(head -c 300 "$out")" >&2
      return 1
    fi
    echo "${said#* }"
  done
}

summary() {
  sort -n | awk '{a[NR] = $1 * 1000}
    END {
      if (NR == 0) exit 1
      p90 = int(NR * 0.9); if (p90 < 1) p90 = 1
      printf "median %.1f ms, p90 %.1f ms, max %.1f ms\n", a[int(NR / 2) + 1], a[p90], a[NR]
    }'
}

cpu_seconds() {
  # Fields 14 and 15 of /proc/PID/stat: utime and stime, in clock ticks.
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}

postgres_cpu_seconds() {
  local hz total=0 pid
  hz=$(getconf CLK_TCK)
  for pid in $(pgrep -x postgres || true); do
    total=$(awk -v t="$total" '{ print t + $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  awk -v t="$total" -v hz="$hz" 'BEGIN { printf "%.2f\n", t / hz }'
}

# cpu_delta_per_op LABEL BEFORE AFTER N: as cpu_per_op, from two readings taken by the caller.
cpu_delta_per_op() {
  python3 -c 'import json,sys
label, before, after, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
spent = after - before
print(json.dumps({"label": label, "cpu_seconds": round(spent, 2), "operations": n,
                  "cpu_us_per_op": round(spent / n * 1e6, 1) if n else None}))' "$@"
}

cpu_per_op() {
  local label=$1 pid=$2 before=$3 n=$4 after
  after=$(cpu_seconds "$pid") || { echo "{\"label\": \"$label\", \"error\": \"process $pid exited\"}"; failed=1; return 1; }
  python3 -c 'import json,sys
label, before, after, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
spent = after - before
print(json.dumps({"label": label, "cpu_seconds": round(spent, 2), "operations": n,
                  "cpu_us_per_op": round(spent / n * 1e6, 1) if n else None}))' "$label" "$before" "$after" "$n"
}

finish() {
  if [ "$failed" != 0 ]; then
    echo "FAILED: a benchmark run failed or timed out (see the lines above)" >&2
    exit 1
  fi
}
