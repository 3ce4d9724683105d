import { defineConfig } from 'vitest/config';

// Tests start real etcd clusters and processes; on a 2-core machine running
// files one at a time keeps timings (and fault tests) honest.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    // In-process mesh components log warnings only; child processes log at info (see harness).
    env: { MESH_LOG_LEVEL: 'warn' },
  },
});
