#!/usr/bin/env bash
# Push efficiency (a script, not a timed test): deliveries per server CPU-second and server memory per
# connection, this tree against a baseline commit, side by side with the ratio, in one run.
#
# Each build's own `commbench run` drives its own embedded server. The load generator runs pinned to
# LOADGEN_CPUS (`taskset`); its server child starts there too (so the server's runtime sizes itself
# for one core) and is moved to SERVER_CPU at once, every thread of it. CPU time, not throughput, is
# the measure: it is far less sensitive to other work on a shared machine. Runs alternate between the
# builds (REPEAT rounds) and the median is shown with the spread (min–max).
#
# A run whose load was not applied as scheduled is repeated (up to TRIES times): on a busy machine a
# starved load generator publishes late, in bursts, and reads in big batches, and then every write
# of the server carries several events and wakes nobody, which makes CPU per delivery look several
# times cheaper than it is under the intended load. A run counts when at most LATE_MAX of its
# publishes started more than 5 ms late (default 10%); the rest are listed and left out. NICE=-10
# runs both processes at a higher priority than the other work on the machine (as root).
#
# What is counted is what summary.csv says: `server_cpu_s` (user + system time of the server process
# over the measured window, kernel network work included — on loopback that includes receive work for
# the client's socket done in softirq during the server's send; see docs/perf/README.md) against
# `events_received` (deliveries) or `requests` (short-poll answers), and
# `server_rss_per_connection_bytes` (peak RSS / peak connections) at MEM_CLIENTS idle connections.
# Kernel settings are not touched.
#
# The machine's floor (FLOOR=1, default): `commbench floor` on the same CPUs measures what the bare
# sockets cost with no protocol code — one write of FLOOR_SIZE bytes per delivery to CLIENTS
# loopback connections at RATE (push), and one answer per request at the short-poll and long-poll
# cells' own answer size and rate (request) — and each pattern is shown as a share of it: no server
# that writes each delivery with its own send can reach 100%.
#
#   scripts/push-efficiency.sh                      # this tree vs HEAD~1
#   BASE=main scripts/push-efficiency.sh            # vs any revision
#   BASE=abc123 HERE=def456 scripts/push-efficiency.sh   # two revisions
#   PATTERNS="ws sse" REPEAT=5 MEM=0 scripts/push-efficiency.sh
#
# A revision is exported with `git archive` (the repository and its worktrees are untouched) into
# CACHE (default ~/.cache/commbench/push-efficiency) and built there with its own target directory,
# reused while the revision is the same. The working tree (no HERE) is built with `cargo build
# --release` in place.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:-HEAD~1}
PATTERNS=${PATTERNS:-ws sse socketio graphql-sub long-poll short-poll}
CLIENTS=${CLIENTS:-2000}
RATE=${RATE:-25}
PAYLOAD=${PAYLOAD:-128}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
INTERVAL=${INTERVAL:-1s}
REPEAT=${REPEAT:-3}
TRIES=${TRIES:-3}
LATE_MAX=${LATE_MAX:-0.10}
NICE=${NICE:-0}
MEM=${MEM:-1}
MEM_CLIENTS=${MEM_CLIENTS:-10000}
MEM_PATTERNS=${MEM_PATTERNS:-ws sse graphql-sub socketio}
FLOOR=${FLOOR:-1}
FLOOR_SIZE=${FLOOR_SIZE:-$((PAYLOAD + 64))}
# A pattern's rate: RATE, or RATE_<pattern> (dashes as underscores). GraphQL subscriptions and long
# polls cost several times what a WebSocket delivery does, so by default they run at a rate the
# baseline serves with CPU to spare on one core: a saturated server (or load generator) batches
# events, which flatters CPU per delivery.
RATE_graphql_sub=${RATE_graphql_sub:-10}
RATE_long_poll=${RATE_long_poll:-5}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPUS=${LOADGEN_CPUS:-1-$(($(nproc) - 1))}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/commbench/push-efficiency}
OUT=${OUT:-$(mktemp -d /tmp/push-efficiency.XXXXXX)}
mkdir -p "$OUT"

if [ "$(nproc)" -lt 2 ]; then
  echo "push-efficiency needs at least 2 CPUs (server on one, load generator on the rest)" >&2
  exit 1
fi
for tool in taskset python3 git cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "push-efficiency needs $tool" >&2; exit 1; }
done

# Builds revision $1 in CACHE/$2 (exported, with its own target directory, which stays for the next
# revision's incremental build) unless that build is already there; sets `built` to the binary.
build_rev() {
  local sha slot=$CACHE/$2
  sha=$(git rev-parse --verify "$1^{commit}")
  if [ "$(cat "$slot/src.rev" 2>/dev/null)" != "$sha" ] || [ ! -x "$slot/target/release/commbench" ]; then
    echo "building $1 ($(git rev-parse --short "$sha")) in $slot ..."
    rm -rf "$slot/src" "$slot/src.rev"
    mkdir -p "$slot/src"
    # -m: the files get the time of extraction, not of their commit. cargo decides a workspace
    # crate is fresh when no source file is newer than its last build, so a revision committed
    # before the slot's last build would otherwise not be rebuilt at all (the old binary measured
    # under the new name).
    git archive "$sha" | tar -x -m -C "$slot/src"
    (cd "$slot/src" && CARGO_TARGET_DIR=$slot/target cargo build --release -q --locked -p commbench-loadgen)
    echo "$sha" >"$slot/src.rev"
  else
    echo "reusing the build of $1 ($(git rev-parse --short "$sha")) in $slot"
  fi
  built=$slot/target/release/commbench
}

# Runs one cell: the load generator on LOADGEN_CPUS, its server child moved to SERVER_CPU.
run_cell() {
  local bin=$1 out=$2
  shift 2
  rm -rf "$out"
  nice -n "$NICE" taskset -c "$LOADGEN_CPUS" "$bin" run --quiet --out "$out" "$@" >"$out.log" 2>&1 &
  local loadgen=$!
  while kill -0 "$loadgen" 2>/dev/null; do
    for child in $(pgrep -P "$loadgen" 2>/dev/null); do
      taskset -a -p -c "$SERVER_CPU" "$child" >/dev/null 2>&1 || true
    done
    sleep 0.02
  done
  if ! wait "$loadgen"; then
    echo "  run failed: $bin run $*" >&2
    tail -2 "$out.log" | sed 's/^/    /' >&2
    return 1
  fi
}

rate_of() {
  local var="RATE_${1//-/_}"
  echo "${!var:-$RATE}"
}

# True when the cell's publishes went out as scheduled (see LATE_MAX above).
on_schedule() {
  python3 - "$1/summary.csv" "$LATE_MAX" <<'PY'
import csv, sys
row = next(csv.DictReader(open(sys.argv[1])))
late, published = int(row["late_sends"] or 0), max(1, int(row["events_published"] or 1))
sys.exit(0 if late <= float(sys.argv[2]) * published else 1)
PY
}

# Runs a cell until it counts (at most TRIES times); a run that does not is kept beside it as
# `<name>.late<N>`. A run that fails (on a shared machine: no free port, say) is tried again after a
# pause.
run_counted() {
  local bin=$1 out=$2
  shift 2
  for try in $(seq "$TRIES"); do
    if ! run_cell "$bin" "$out" "$@"; then
      rm -rf "$out"
      sleep 10
      continue
    fi
    on_schedule "$out" && return 0
    rm -rf "$out.late$try" && mv "$out" "$out.late$try"
  done
  return 0
}

load_args() {
  local pattern=$1
  echo "--pattern $pattern --clients $CLIENTS --rate $(rate_of "$pattern") --payload $PAYLOAD --duration $DURATION --warmup $WARMUP --interval $INTERVAL"
}

# REPORT_ONLY=1 OUT=dir prints the tables of an earlier run again.
mkdir -p "$CACHE"
base_short=$(git rev-parse --short "$BASE^{commit}")
here_label=${HERE:-this}
if [ "${REPORT_ONLY:-0}" != 1 ]; then
  if [ -n "${HERE:-}" ]; then
    here_label=$(git rev-parse --short "$HERE^{commit}")
    build_rev "$HERE" here
    here_bin=$built
  else
    dirty=""
    git diff --quiet HEAD -- 2>/dev/null || dirty="+changes"
    here_label="$(git rev-parse --short HEAD)$dirty"
    echo "building this tree ($here_label) ..."
    cargo build --release -q --locked -p commbench-loadgen
    here_bin=$PWD/target/release/commbench
  fi
  build_rev "$BASE" base
  base_bin=$built

  echo "server on CPU $SERVER_CPU, load generator on CPUs $LOADGEN_CPUS; results in $OUT"
  echo "load: $CLIENTS clients on one topic, $RATE events/s (graphql-sub $RATE_graphql_sub, long-poll $RATE_long_poll), $PAYLOAD B payloads, ${DURATION} window after ${WARMUP} warm-up (short-poll: every $INTERVAL); $REPEAT rounds"
  uptime
  for round in $(seq "$REPEAT"); do
    for pattern in $PATTERNS; do
      for build in base here; do
        bin=$base_bin; [ "$build" = here ] && bin=$here_bin
        # shellcheck disable=SC2046
        run_counted "$bin" "$OUT/$build-$pattern-$round" $(load_args "$pattern")
      done
      echo "  round $round: $pattern done"
    done
  done
  if [ "$MEM" = 1 ]; then
    for pattern in $MEM_PATTERNS; do
      for build in base here; do
        bin=$base_bin; [ "$build" = here ] && bin=$here_bin
        for _ in $(seq "$TRIES"); do
          run_cell "$bin" "$OUT/$build-mem-$pattern" --pattern "$pattern" --clients "$MEM_CLIENTS" \
            --rate 1 --payload "$PAYLOAD" --duration 5s --warmup 2s && break
          rm -rf "$OUT/$build-mem-$pattern"
          sleep 10
        done
      done
      echo "  memory: $pattern done"
    done
  fi
  if [ "$FLOOR" = 1 ]; then
    # A poll pattern's answers as this tree's cells made them: the median size (body and head) and
    # each client's interval between answers, "SIZE INTERVALms", or nothing without such cells.
    answer_shape() {
      python3 - "$OUT" "$1" "$CLIENTS" "$DURATION" <<'PY'
import csv, glob, statistics, sys
out, pattern, clients, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [r for path in glob.glob(f"{out}/here-{pattern}-[0-9]*/summary.csv")
        for r in csv.DictReader(open(path)) if int(r["requests"] or 0) > 0]
if rows:
    size = statistics.median(int(r["bytes_down"]) // int(r["requests"]) for r in rows)
    interval_ms = statistics.median(clients * float(r["measured_s"]) * 1000 / int(r["requests"])
                                    for r in rows)
    print(f"{int(size)} {max(1, round(interval_ms))}ms")
PY
    }
    for round in $(seq "$REPEAT"); do
      floor_args=(--clients "$CLIENTS" --duration "$DURATION" --warmup "$WARMUP"
        --server-cpus "$SERVER_CPU" --client-cpus "$LOADGEN_CPUS" --json)
      nice -n "$NICE" "$here_bin" floor --mode push --rate "$RATE" --size "$FLOOR_SIZE" \
        "${floor_args[@]}" >"$OUT/floor-push-$round.json"
      # The request floor at each poll pattern's own answer size and rate (a long poll's answers
      # come in bursts, one per event for every waiting client; the floor's are spread evenly).
      for pattern in short-poll long-poll; do
        read -r size interval <<<"$(answer_shape "$pattern")" || true
        [ -n "${size:-}" ] || continue
        nice -n "$NICE" "$here_bin" floor --mode request --interval "$interval" --size "$size" \
          "${floor_args[@]}" >"$OUT/floor-$pattern-$round.json"
      done
    done
    echo "  floor done"
  fi
  uptime
fi

python3 - "$OUT" "$REPEAT" "$base_short" "$here_label" "$PATTERNS" "$MEM" "$MEM_PATTERNS" <<'PY'
import csv, statistics, sys
out, repeat, base, here, patterns, mem, mem_patterns = sys.argv[1:]
repeat = int(repeat)

import glob, os

def row(name):
    with open(f"{out}/{name}/summary.csv") as f:
        return next(csv.DictReader(f))

def rounds(build, pattern):
    """The rows of the runs that count (a round without one is left out)."""
    return [row(f"{build}-{pattern}-{i}") for i in range(1, repeat + 1)
            if os.path.exists(f"{out}/{build}-{pattern}-{i}/summary.csv")]

def per_cpu(r, pattern):
    cpu = float(r["server_cpu_s"] or "nan")
    count = float(r["requests"] if pattern == "short-poll" else r["events_received"])
    return count / cpu

def fmt(values):
    m = statistics.median(values)
    return f"{m:>10,.0f} ({min(values):,.0f}–{max(values):,.0f})"

import json

def floors(mode):
    return [json.load(open(path)) for path in sorted(glob.glob(f"{out}/floor-{mode}-*.json"))]

floor = {mode: floors(mode) for mode in ("push", "short-poll", "long-poll")}
# What each pattern is held against: a poll answer against the request floor at its own size and
# rate, a delivery that is one write on an open connection against the push floor.
floor_of = {"short-poll": "short-poll", "long-poll": "long-poll"}

print()
print(f"deliveries per server CPU-second (short-poll: answers), median (min–max) of {repeat}")
print(f"{'pattern':<12} {'base ' + base:>28} {'this ' + here:>28} {'ratio':>7}  µs/delivery base → this  of floor")
for pattern in patterns.split():
    b = [per_cpu(r, pattern) for r in rounds("base", pattern)]
    h = [per_cpu(r, pattern) for r in rounds("here", pattern)]
    if not b or not h:
        print(f"{pattern:<12} no run kept to its schedule; see {out}")
        continue
    ratio = statistics.median(h) / statistics.median(b)
    mode = floor_of.get(pattern, "push")
    share = "—"
    if mode and floor[mode]:
        share = f"{statistics.median(h) / statistics.median([f['per_cpu_second'] for f in floor[mode]]):.0%}"
    print(f"{pattern:<12} {fmt(b):>28} {fmt(h):>28} {ratio:>6.2f}×  "
          f"{1e6 / statistics.median(b):.2f} → {1e6 / statistics.median(h):.2f}  {share:>9}")
for mode, runs in floor.items():
    if not runs:
        continue
    what = "one write per delivery" if mode == "push" else f"one answer per request, as {mode}"
    values = [f["per_cpu_second"] for f in runs]
    trouble = sum(f["would_block"] + f["late_ticks"] for f in runs)
    print(f"floor, {mode} ({what}, {runs[0]['size']} B, bare sockets): {fmt(values).strip()} per CPU-second, "
          f"{1e6 / statistics.median(values):.2f} µs each" + (f"; {trouble} writes blocked or ticks late" if trouble else ""))
notes = []
for pattern in patterns.split():
    for build in ("base", "here"):
        for r in rounds(build, pattern):
            lost, errors = int(r["events_lost"] or 0), int(r["errors"] or 0)
            if lost or errors:
                notes.append(f"{build} {pattern}: {lost} lost, {errors} errors ({r['error_kinds']})")
late = sorted(glob.glob(f"{out}/*-*-*.late*/summary.csv"))
for path in late:
    r = next(csv.DictReader(open(path)))
    name = path.split("/")[-2]
    pattern = r["pattern"]
    notes.append(f"left out {name}: {r['late_sends']} of {r['events_published']} publishes late, "
                 f"{per_cpu(r, pattern):,.0f}/CPU-s")
for note in notes:
    print("  !", note)

if mem == "1":
    print()
    print("memory at idle connections (1 event/s): server RSS / connection, load generator RSS / client")
    print(f"{'pattern':<12} {'conns':>6} {'server base':>12} {'server this':>12} {'ratio':>6} {'loadgen base':>13} {'loadgen this':>13}")
    for pattern in mem_patterns.split():
        try:
            b, h = row(f"base-mem-{pattern}"), row(f"here-mem-{pattern}")
        except OSError:
            print(f"{pattern:<12} no run completed; see {out}")
            continue
        conns = int(h["connections_peak"] or 0)
        sb = int(b["server_rss_per_connection_bytes"] or 0)
        sh = int(h["server_rss_per_connection_bytes"] or 0)
        lb = int(b["loadgen_peak_rss_bytes"] or 0) / max(1, int(b["connections_peak"] or 1))
        lh = int(h["loadgen_peak_rss_bytes"] or 0) / max(1, conns)
        print(f"{pattern:<12} {conns:>6} {sb / 1024:>9.1f} KiB {sh / 1024:>9.1f} KiB {sb / max(sh, 1):>5.2f}× "
              f"{lb / 1024:>9.1f} KiB {lh / 1024:>9.1f} KiB")
PY
