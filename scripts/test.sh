#!/usr/bin/env bash
# The README's test command: install what the tests need, then run every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --workspace --locked "$@"
