import { defineConfig } from 'vitest/config';

/**
 * Files run one at a time: they start real etcd clusters and processes, and
 * on a 2-core machine two at a time were no faster (measured 2026-11-30:
 * the files that could share the machine took 360 s either way, each twice
 * as long, because most of their time is CPU: mesh CLI start-ups, etcd)
 * while files with timing bounds under faults need the cores to themselves.
 */
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    // In-process mesh components log warnings only; child processes log at info (see harness).
    env: { MESH_LOG_LEVEL: 'warn' },
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
  },
});
