#!/usr/bin/env bash
# Where the server's CPU goes for one push pattern (a script, not a test): runs the cell
# push-efficiency.sh runs (same pinning and load), samples the server with `perf record -e cpu-clock`
# over the middle of the window (call graphs by frame pointers; CALL_GRAPH=dwarf for a release build
# without them), and prints a text summary: how much is kernel work, how much of
# it is the send path and, inside it, the loopback receive work done for the client's socket
# (softirq), then the top frames by self time.
#
#   scripts/profile-push.sh ws                     # this tree's release build
#   BIN=~/.cache/commbench/push-efficiency/base/target/release/commbench scripts/profile-push.sh sse
#   CALL_GRAPH=dwarf scripts/profile-push.sh sse   # perf's --call-graph mode (default fp)
#
# Needs `perf` (Debian: linux-perf). Hardware counters are not needed: cpu-clock is a software event.
set -euo pipefail
cd "$(dirname "$0")/.."

PATTERN=${1:?usage: profile-push.sh PATTERN}
CLIENTS=${CLIENTS:-2000}
RATE=${RATE:-25}
PAYLOAD=${PAYLOAD:-128}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPUS=${LOADGEN_CPUS:-1-$(($(nproc) - 1))}
SECONDS_SAMPLED=${SECONDS_SAMPLED:-8}
TOP=${TOP:-25}
command -v perf >/dev/null 2>&1 || { echo "profile-push needs perf (apt-get install linux-perf)" >&2; exit 1; }

if [ -z "${BIN:-}" ]; then
  cargo build --release -q --locked -p commbench-loadgen
  BIN=$PWD/target/release/commbench
fi
work=$(mktemp -d /tmp/profile-push.XXXXXX)
duration=$((SECONDS_SAMPLED + 6))

taskset -c "$LOADGEN_CPUS" "$BIN" run --quiet --pattern "$PATTERN" --clients "$CLIENTS" \
  --rate "$RATE" --payload "$PAYLOAD" --duration "${duration}s" --warmup 3s \
  --out "$work/run" >"$work/run.log" 2>&1 &
loadgen=$!
server=""
recorder=""
while kill -0 "$loadgen" 2>/dev/null; do
  for child in $(pgrep -P "$loadgen" 2>/dev/null); do
    taskset -a -p -c "$SERVER_CPU" "$child" >/dev/null 2>&1 || true
    server=$child
  done
  if [ -n "$server" ] && [ -z "$recorder" ]; then
    # Ramp and warm-up first: sample the steady state.
    (sleep 6; perf record -q -e cpu-clock --call-graph "${CALL_GRAPH:-fp}" -p "$server" -o "$work/perf.data" -- sleep "$SECONDS_SAMPLED" \
      >/dev/null 2>&1) &
    recorder=$!
  fi
  sleep 0.02
done
wait "$loadgen" || { echo "run failed; see $work/run.log" >&2; exit 1; }
[ -n "$recorder" ] && wait "$recorder"

python3 - "$work/run/summary.csv" <<'PY'
import csv, sys
r = next(csv.DictReader(open(sys.argv[1])))
cpu, events = float(r["server_cpu_s"]), float(r["events_received"])
print(f"{r['pattern']}: {r['clients']} clients, {r['rate_per_s']}/s, {events:,.0f} deliveries, "
      f"server {cpu:.2f} CPU-s = {events / cpu:,.0f} deliveries per CPU-second "
      f"({1e6 * cpu / events:.2f} µs each); {r['late_sends']} of {r['events_published']} publishes late")
PY

report() { perf report -i "$work/perf.data" --stdio --no-header "$@" 2>/dev/null; }
echo
echo "share of the server's samples (children included):"
report --children --sort sym -g none \
  | awk '/%/ && ($4 ~ /^(entry_SYSCALL_64_after_hwframe|__x64_sys_sendto|__x64_sys_writev|tcp_sendmsg|net_rx_action|__napi_poll|tcp_v4_rcv|sock_def_readable|epoll_wait|do_epoll_wait|__x64_sys_epoll_wait|__schedule)$/) {printf "  %-8s %s\n", $1, $4}'
echo
echo "by binary (self):"
report --no-children --sort dso -g none | awk '/%/ {printf "  %-8s %s\n", $1, $2}'
echo
echo "top $TOP frames by self time:"
report --no-children --sort sym -g none | awk '/%/' | head -"$TOP" | sed 's/^ */  /'
echo
echo "top user-space frames (self):"
report --no-children --sort sym -g none --dsos commbench | awk '/%/' | head -"$TOP" | sed 's/^ */  /'
echo
echo "(perf data: $work/perf.data)"
