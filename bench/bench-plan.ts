/** What one bench run covers: its sections (`--only`) and the sizes of a `--quick` or a full run. */

/** The sections, in the order `--only` lists them. */
export const SECTIONS = ['overhead', 'fairness', 'lb', 'errors', 'leave', 'join', 'scale', 'metrics', 'xds'] as const;
export type Section = (typeof SECTIONS)[number];

/** The command line, as parsed. */
export interface BenchFlags {
  quick: boolean;
  members: number;
  concurrency: number;
  trafficRate: number;
  only?: string[];
}

export interface Plan {
  pairs: number;
  runMs: number;
  simultaneousRuns: number;
  warmMs: number;
  fairnessRunMs: number;
  leaveTrials: number;
  joinTrials: number;
  trafficConcurrency: number;
  scaleSizes: number[];
  firstSetTrials: number;
  churnPerSecond: number;
  churnSeconds: number;
  lbRunMs: number;
  lbWarmMs: number;
  lbEqualRuns: number;
  metricsRounds: number;
  metricsRunMs: number;
  /** Rounds of the registration burst (bench/scale-burst.ts: 1 and 50 resolvers, old and current coalescing). */
  burstRounds: number;
  /** Issue 14 items 1-3, on a 3-member etcd of their own. */
  fleet: { registrations: number; processes: number; windowMs: number; herdRegistrations: number; herdResolvers: number; herdProcesses: number; herdTtl: number; herdSettleMs: number; wideBackends: number; wideRounds: number; wideRunMs: number };
}

export function plan(quick: boolean): Plan {
  return quick
    ? { pairs: 12, runMs: 750, simultaneousRuns: 3, warmMs: 750, fairnessRunMs: 2_500, leaveTrials: 7, joinTrials: 10, trafficConcurrency: 16, scaleSizes: [1_000, 10_000], firstSetTrials: 3, churnPerSecond: 1_000, churnSeconds: 5, lbRunMs: 2_500, lbWarmMs: 500, lbEqualRuns: 4, metricsRounds: 4, metricsRunMs: 2_000, burstRounds: 1, fleet: { registrations: 1_000, processes: 4, windowMs: 5_000, herdRegistrations: 200, herdResolvers: 100, herdProcesses: 2, herdTtl: 2, herdSettleMs: 20_000, wideBackends: 1_000, wideRounds: 1, wideRunMs: 3_000 } }
    : { pairs: 30, runMs: 1_000, simultaneousRuns: 5, warmMs: 1_500, fairnessRunMs: 8_000, leaveTrials: 14, joinTrials: 40, trafficConcurrency: 16, scaleSizes: [1_000, 10_000], firstSetTrials: 5, churnPerSecond: 1_000, churnSeconds: 30, lbRunMs: 6_000, lbWarmMs: 1_000, lbEqualRuns: 6, metricsRounds: 8, metricsRunMs: 3_000, burstRounds: 3, fleet: { registrations: 1_000, processes: 4, windowMs: 10_000, herdRegistrations: 1_000, herdResolvers: 500, herdProcesses: 4, herdTtl: 5, herdSettleMs: 40_000, wideBackends: 1_000, wideRounds: 2, wideRunMs: 5_000 } };
}
