#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine. Idempotent: skips what is present.
# Servers and clients are started by the tests themselves on 127.0.0.1:0; system packages a test
# needs are added here.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# The Redis bus tests start their own redis-server on a free loopback port.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The RabbitMQ backend tests start a private node (and its own epmd) on free loopback ports.
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 \
  || need_apt+=(rabbitmq-server)
# The GraphQL WebSocket and SSE tests drive reference clients (npm graphql-ws, eventsource).
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The HTML report test loads REPORT.html in headless Chromium (driven by loadgen/tests/browser).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

# The peer tests start the Node peer (peers/node) and run the real socket.io-client.
"$(dirname "$0")/install-peers.sh"
# The HTML report test drives Chromium with playwright-core (never a downloaded browser).
"$(dirname "$0")/npm-ci.sh" loadgen/tests/browser
# The GraphQL WebSocket and SSE tests run the reference graphql-transport-ws client (npm graphql-ws)
# and a reference EventSource (npm eventsource).
"$(dirname "$0")/npm-ci.sh" servers/tests/js

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# The Kafka backend tests start tansu, a Kafka-compatible broker from crates.io. Building it takes
# about 16 minutes on 2 cores, so it is cached in ~/.cache/commbench and skipped when present
# (COMMBENCH_TANSU or a tansu on PATH are used instead when set).
tansu_version=0.6.0
tansu_root="$HOME/.cache/commbench/tansu-$tansu_version"
if [ -z "${COMMBENCH_TANSU:-}" ] && ! command -v tansu >/dev/null 2>&1 \
  && [ ! -x "$tansu_root/bin/tansu" ]; then
  echo "building tansu $tansu_version into $tansu_root (about 16 minutes on 2 cores)"
  nice cargo install tansu --version "$tansu_version" --features dynostore \
    --root "$tansu_root"
fi
echo "test dependencies present"
