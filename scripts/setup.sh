#!/usr/bin/env bash
# Bring a fresh machine to the point where etcd-mesh runs: the etcd binaries
# (Debian's etcd-server/etcd-client, when `etcd` is missing), npm deps, build.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: etcd itself, and docker-compose (v1) only to validate
# docker-compose.yml in the tests (`config -q` needs no engine), chromium
# only to open the load report in the tests.
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
[ "${MESH_SETUP_DEMO_ONLY:-}" = 1 ] || command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# Chromium only for the tests (the load report is opened in headless Chromium).
[ "${MESH_SETUP_DEMO_ONLY:-}" = 1 ] || [ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
else
  npm run --silent build
fi
