#!/usr/bin/env bash
# All tests, from a fresh clone: set-up first (etcd binaries, npm deps, build),
# then vitest against real etcd clusters and real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p .tmp
rc=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.tmp/vitest.json "$@" || rc=$?
# One plain closing line that any CI reader understands.
node -e '
  const r = require("./.tmp/vitest.json");
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' 2>/dev/null || true
exit $rc
