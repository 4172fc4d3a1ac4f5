#!/usr/bin/env bash
# Installs one directory's npm packages from its committed package-lock.json (`npm ci`), with node
# and npm from Debian's packages when missing. Idempotent: skips npm ci when node_modules was
# installed from the same lock file.
# usage: scripts/npm-ci.sh DIR   (DIR relative to the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:?usage: scripts/npm-ci.sh DIR}"
cd "$root/$dir"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm
fi

stamp=node_modules/.commbench-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$dir: packages present (node $(node --version))"
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
echo "$dir: packages installed (node $(node --version))"
