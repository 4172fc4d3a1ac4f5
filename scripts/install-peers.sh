#!/usr/bin/env bash
# Installs the peer servers' dependencies: node and npm (from Debian's packages when missing), then
# `npm ci` in peers/node from its committed package-lock.json (skipped when already installed from
# the same lock file).
set -euo pipefail
exec "$(dirname "$0")/npm-ci.sh" peers/node
