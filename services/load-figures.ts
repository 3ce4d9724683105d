import type { LatencyFigures } from './load-histogram';

/*
 * What a load run reports: the summary (`--json` prints it) and the
 * per-second ticks. Their own file because the engine that fills them and
 * runLoad's face (load-generator) both need them; kept in load-generator they
 * made the two import each other.
 */

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
  /**
   * Added so an overloaded run cannot read as a healthy one: `requests`
   * counts only calls sent, and `ok` calls that came back long after their
   * intended start. Calls the run asked for in the measured period:
   * requests + notSent (open loop: schedule.intended; closed loop: requests).
   */
  scheduled: number;
  /** Calls the schedule asked for that were never sent (= schedule.missed; 0 in closed loop). */
  notSent: number;
  /** Ok calls (counted in `ok` too) that ended more than `deadlineMs` after their intended start (closed loop: after their start). */
  late: number;
  /** The deadline of each call (`--deadline`), against which `late` is judged. */
  deadlineMs: number;
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

/** Per-second window handed to the live view (and, collected, to the report). A second with no call at all is a tick too. */
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
  /** Of `ok`, the calls that ended more than the deadline after their intended start. */
  late: number;
  /** Open loop: calls the schedule asked to start in that second (sent or not); what `sent` falls short of under overload. */
  asked?: number;
}
