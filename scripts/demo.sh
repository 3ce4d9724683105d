#!/usr/bin/env bash
# The demo from a fresh clone: set-up, then `mesh demo` (its own local etcd
# cluster, greeters and load client). Extra arguments go to `mesh demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
MESH_SETUP_DEMO_ONLY=1 bash scripts/setup.sh
exec node dist/cli/main.js demo "$@"
