#!/usr/bin/env bash
# Peer benchmark (a script, not a timed test): wrk and commbench's request-response client, closed
# loop, same connection count, same endpoint of the same commbench server, one after the other.
# Prints requests/s of each, the ratio (target: commbench >= 0.9x wrk) and the CPU each side used.
#
#   scripts/compare-wrk.sh                 # 50 connections, 10 s each
#   CONNS=200 DURATION=20 scripts/compare-wrk.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-50}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
PATH_UNDER_TEST=${PATH_UNDER_TEST:-/hello}

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time)
command -v bc >/dev/null 2>&1 || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

cargo build --release -q -p commbench-loadgen
bin=target/release/commbench
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

RUST_LOG=warn "$bin" serve --bind 127.0.0.1:0 --max-connections 100000 >"$work/server.out" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/server.out")
[ -n "$url" ] || { echo "server did not start" >&2; cat "$work/server.out" >&2; exit 1; }

server_cpu() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
ticks=$(getconf CLK_TCK)

echo "server $url (pid $server_pid); $CONNS connections, ${DURATION}s each, GET $PATH_UNDER_TEST"

before=$(server_cpu)
/usr/bin/time -f "%U %S" -o "$work/wrk.time" \
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "$url$PATH_UNDER_TEST" >"$work/wrk.out"
wrk_server_cpu=$(echo "($(server_cpu) - $before) / $ticks" | bc -l)
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
wrk_cpu=$(awk '{print $1 + $2}' "$work/wrk.time")

before=$(server_cpu)
/usr/bin/time -f "%U %S" -o "$work/cb.time" \
  "$bin" run --quiet --pattern request-response --closed-loop --clients "$CONNS" \
  --duration "${DURATION}s" --warmup 1s --target "$url" --out "$work/cb" >/dev/null
cb_server_cpu=$(echo "($(server_cpu) - $before) / $ticks" | bc -l)
cb_rps=$(python3 -c "import csv,sys; r=next(csv.DictReader(open(sys.argv[1]))); print(r['achieved_rate_per_s'])" "$work/cb/summary.csv")
cb_cpu=$(awk '{print $1 + $2}' "$work/cb.time")

printf '\n%-12s %12s %14s %16s\n' tool "requests/s" "client CPU s" "server CPU s"
printf '%-12s %12.0f %14.2f %16.2f\n' wrk "$wrk_rps" "$wrk_cpu" "$wrk_server_cpu"
printf '%-12s %12.0f %14.2f %16.2f\n' commbench "$cb_rps" "$cb_cpu" "$cb_server_cpu"
ratio=$(echo "$cb_rps / $wrk_rps" | bc -l)
printf '\ncommbench / wrk = %.2f  (target >= 0.90)\n' "$ratio"
echo "(commbench's run includes a 1 s warm-up and its server start-up checks in its CPU time)"
