#!/usr/bin/env node
'use strict';
// The compiled CLI lives in dist/ (built by `npm ci` / `npm run build`).
let main;
try {
  main = require('../dist/cli/main.js').main;
} catch (err) {
  if (err && err.code === 'MODULE_NOT_FOUND' && String(err.message).includes('dist/cli/main.js')) {
    process.stderr.write('mesh: not built yet; run `npm ci` (or `npm run build`) in the etcd-mesh checkout\n');
    process.exit(1);
  }
  throw err;
}
main(process.argv);
