#!/usr/bin/env bash
# The scale run (a script, not a timed test): 100,000 concurrent WebSocket clients, then 100,000
# SSE clients, on this machine: 6 server instances joined by a private redis-server, the clients
# split over 6 load-worker processes (each under the 20,000 open-file limit), 20 events/s over 100
# topics (1,000 clients per topic). Writes results/<date>-100k/ (summary.csv, run.json, histograms)
# and prints the kernel settings that matter, as they are, so the run's README can state them.
#
#   scripts/scale-100k.sh                     # ws and sse, 30 s windows
#   PATTERNS=ws DURATION=60s scripts/scale-100k.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PATTERNS=${PATTERNS:-ws,sse}
CLIENTS=${CLIENTS:-100k}
DURATION=${DURATION:-30s}
OUT=${OUT:-results/$(date -u +%Y-%m-%d)-100k}

command -v redis-server >/dev/null 2>&1 || scripts/install-test-deps.sh
cargo build --release -q -p commbench-loadgen

echo "kernel settings (none changed by this script):"
for key in net/ipv4/ip_local_port_range net/core/somaxconn net/ipv4/tcp_max_syn_backlog \
           net/ipv4/tcp_mem fs/file-max fs/nr_open; do
  printf '  %-30s %s\n' "$key" "$(tr '\t' ' ' < /proc/sys/$key)"
done
echo "  open files per process (hard)  $(ulimit -Hn)"

target/release/commbench run -p "$PATTERNS" -c "$CLIENTS" --instances 6 --bus redis --procs 6 \
  -r 20 --topics 100 -d "$DURATION" --warmup 5s --out "$OUT"
