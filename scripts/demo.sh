#!/usr/bin/env bash
# The demo from a fresh clone: set-up, then `mesh demo` (its own local etcd
# cluster, greeters and load client). Extra arguments go to `mesh demo`.
#
# Signals: package.json runs this script with `exec`, and the script `exec`s
# node, so `npm run demo`'s SIGINT/SIGTERM/SIGHUP (npm forwards them to its
# child) reach mesh itself, which stops everything and removes its data dirs.
# A signal during set-up ends this script; the set-up step underway (apt-get,
# npm ci, the build) is in the same process group, so a terminal's Ctrl-C
# stops it too, but a signal to this script's pid alone lets it finish.
# MESH_DEMO_SKIP_SETUP=1 skips set-up (an already built checkout; the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${MESH_DEMO_SKIP_SETUP:-}" = 1 ] || MESH_SETUP_DEMO_ONLY=1 bash scripts/setup.sh
exec node dist/cli/main.js demo "$@"
