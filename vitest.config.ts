import { defineConfig } from 'vitest/config';

/**
 * Files whose assertions are about timing under faults (SIGSTOP, TTL
 * expiry, ejection within a bound, a page updating within a second, a load
 * keeping its schedule): they run one at a time, after the others, so no
 * other suite competes with them for the 2 cores. Everything else starts
 * its own etcd and processes on free ports and temporary dirs, so two files
 * at a time do not share anything; they mostly wait on etcd and child
 * processes, which is where running two at once saves time.
 */
const TIMING = [
  'test/faults.test.ts',
  'test/lb-load-aware.test.ts',
  'test/coordination-lock-pause.test.ts',
  'test/coordination-lock-stall.test.ts',
  'test/coordination-queue-guarantees.test.ts',
  'test/demo-signals.test.ts',
  'test/interop-python.test.ts',
  'test/interop-go.test.ts',
  'test/scale-*.test.ts',
  'test/load-modes.test.ts',
  'test/load-report.test.ts',
  'test/dashboard-*.test.ts',
  'test/demo.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    // In-process mesh components log warnings only; child processes log at info (see harness).
    env: { MESH_LOG_LEVEL: 'warn' },
    projects: [
      {
        extends: true,
        test: { name: 'parallel', include: ['test/**/*.test.ts'], exclude: TIMING, maxWorkers: 2, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: { name: 'timing', include: TIMING, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
