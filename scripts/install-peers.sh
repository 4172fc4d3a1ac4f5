#!/usr/bin/env bash
# Installs the peer servers' dependencies: node and npm (from Debian's packages when missing), then
# `npm ci` in peers/node from its committed package-lock.json. Idempotent: skips npm ci when
# node_modules was installed from the same lock file.
set -euo pipefail
cd "$(dirname "$0")/../peers/node"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm
fi

stamp=node_modules/.commbench-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "peers/node: packages present (node $(node --version))"
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
echo "peers/node: packages installed (node $(node --version))"
