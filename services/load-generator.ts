import { runLoadEngine } from './load-engine';
import type { LoadOptions } from './load-options';
import type { LoadReport } from './load-figures';

// The types a caller of runLoad needs, from where callers have always imported them.
export type { LoadReport, ScheduleFigures, LoadTick } from './load-figures';
export type { LoadOptions } from './load-options';

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return 0;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

/**
 * Load through `client`: closed loop (`concurrency` workers, each sending
 * its next call when the previous one ends) or, with `rate`, open loop
 * (calls start on schedule, latency from the intended start). Bounded in
 * time; a call that misses its deadline counts as failed under its status
 * code name (DEADLINE_EXCEEDED). See services/load-engine.ts.
 */
export function runLoad(opts: LoadOptions): Promise<LoadReport> {
  return runLoadEngine(opts);
}
