import { existsSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

/**
 * Two groups of files, one after the other:
 * - `shared`: files whose assertions hold on a busy machine (usage errors,
 *   etcdctl parity, coordination semantics, peers that mostly wait): three
 *   at a time on 2 cores (each waits much of the time), so one file's
 *   waiting (TTL expiries, a 30 s connection watch)
 *   overlaps another's work.
 * - `alone`: files with timing bounds under faults or load (rebalancing
 *   within a second, shares within points, open-loop rates), the demo's
 *   signal races (a second Ctrl-C 300 ms after the first: one CI run beside
 *   another file saw the demo end by a signal, not exit 130), and any file
 *   not named below: one at a time, with the cores to themselves.
 * Every file starts its own etcd on free ports with its own data dir, so
 * files never share state.
 */
const SHARED = [
  'bad-input',
  'bytes-argv',
  'bytes-pubsub-progress',
  'compose',
  'coordination-barrier',
  'coordination-election',
  'coordination-lock',
  'coordination-progress',
  'coordination-pubsub',
  'coordination-queue',
  'coordination-queue-guarantees',
  'dashboard-health',
  'dashboard-prom-text',
  'dashboard-stale',
  'demo-bin',
  'demo-secrets',
  'endpoint-codec',
  'health-client',
  'health-server',
  'interop-go',
  'interop-go-health',
  'interop-python',
  'kv-etcdctl',
  'layout',
  'lb-failure-math',
  'lb-pick-math',
  'library',
  'load-report',
  'metrics-histogram',
  'metrics-scrape',
  'monitor',
  'package-install',
  'scale-go-fleet',
  'scale-subset',
  'security',
  'subset-members',
  'xds-cli',
  'xds-dashboard',
].map((name) => `test/${name}.test.ts`);

const common = {
  testTimeout: 60_000,
  hookTimeout: 60_000,
  // In-process mesh components log warnings only; child processes log at info (see harness).
  // Test etcd data dirs on tmpfs where there is one: etcd fsyncs every write (3.5 vs 6 ms a put here).
  env: { MESH_LOG_LEVEL: 'warn', ...(existsSync('/dev/shm') ? { MESH_ETCD_DATA_ROOT: '/dev/shm' } : {}) },
};

export default defineConfig({
  test: {
    reporters: ['default'],
    projects: [
      { test: { ...common, name: 'shared', include: SHARED, maxWorkers: 3, sequence: { groupOrder: 0 } } },
      { test: { ...common, name: 'alone', include: ['test/**/*.test.ts'], exclude: SHARED, fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
});
