#!/usr/bin/env bash
# The README's test command: install what the tests need, then run every test in the workspace.
# Ends with one total line ("tests: N passed, N failed") summed over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
