#!/usr/bin/env bash
# All tests, from a fresh clone: set-up first (etcd binaries, npm deps, build),
# then vitest against real etcd clusters and real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/setup.sh
mkdir -p .tmp
# Test set-up: the Go interop peers (a cold build is half a minute of both
# cores; cached under .tmp/ by their sources' hash).
bash scripts/build-go-peers.sh >/dev/null
echo "test set-up: $(( $(date +%s) - t0 )) s" >&2
rc=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.tmp/vitest.json "$@" || rc=$?
# One plain closing line that any CI reader understands.
node -e '
  const r = require("./.tmp/vitest.json");
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped; vitest ${Math.round((Date.now() - r.startTime) / 1000)} s`);
' 2>/dev/null || true
exit $rc
