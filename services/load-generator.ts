import type { GreeterClient } from './greeter-client';
import { runLoadEngine } from './load-engine';
import type { LatencyFigures } from './load-histogram';
import type { RateSchedule } from './load-schedule';

/** Figures of one load run; `--json` prints exactly this object. */
export interface LoadReport {
  requests: number;
  ok: number;
  failed: number;
  rps: number;
  durationS: number;
  /** Latency of the ok calls (open loop: from each call's intended start); p99.9 was added after the others. */
  latencyMs: LatencyFigures;
  backends: Record<string, number>;
  errors: Record<string, number>;
  /** Fields below were added after the first ones; the ones above never change. */
  mode: 'open' | 'closed';
  concurrency?: number;
  /** Warm-up run before measuring, left out of every figure above. */
  warmupS: number;
  /** Open loop only: whether the schedule was kept. */
  schedule?: ScheduleFigures;
}

/** How well an open-loop schedule was kept (measured calls only). */
export interface ScheduleFigures {
  rate: string;
  /** Calls the schedule asked for in the measured period (or up to --total). */
  intended: number;
  sent: number;
  /** Intended calls never started because the client fell behind. */
  missed: number;
  /** How far behind their intended start calls were started (max and p99); the max also covers the oldest call never sent. */
  behindMaxMs: number;
  behindP99Ms: number;
  /** No call missed and none started more than 100 ms late. */
  kept: boolean;
}

/** Per-second window handed to the live view. */
export interface LoadTick {
  /** Second k covers [k-1, k) s after the load (warm-up included) began. */
  second: number;
  /** Calls started in that second (ok/failed count completions). */
  sent: number;
  ok: number;
  failed: number;
  backends: Record<string, number>;
  errors: Record<string, number>;
  /** Latency of that second's ok calls. */
  latencyMs: LatencyFigures;
  /** The second is (partly) warm-up. */
  warmup: boolean;
}

export interface LoadOptions {
  client: GreeterClient;
  concurrency: number;
  /** Measured run time after the warm-up; Infinity with `total`. */
  durationMs: number;
  /** Open loop at this rate (schedule) instead of `concurrency` workers. */
  rate?: RateSchedule;
  /** Stop after this many measured calls. */
  total?: number;
  /** Load run before measuring, left out of the report. */
  warmupMs?: number;
  /** Deadline of each call, hedged attempts included. */
  deadlineMs: number;
  name?: string;
  /** Called once per second with that second's counts. */
  onTick?: (tick: LoadTick) => void;
  /** Stop early (e.g. Ctrl-C); the report covers what ran. */
  signal?: AbortSignal;
}

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
