import type { EndpointLoad } from './endpoint-load';

/**
 * The pick math of the `load_aware` policy, pure (clock and random source
 * passed in) so it is unit-tested without grpc-js or a network.
 *
 * How a backend is chosen, per call:
 * 1. Probe: an ejected backend with no call in flight that has not been
 *    tried for `probeIntervalMs` gets this call, so it is measured again and
 *    wins its share back once it recovers (no starvation of the slow).
 * 2. First candidate: smooth weighted round robin (nginx's) over the backends
 *    not ejected. Alone, this gives every backend exactly its weight's share.
 * 3. Second candidate: one other such backend at random (power of two choices).
 * 4. The first candidate is kept unless its cost (peak EWMA latency x
 *    its overload against its weight's fair share of the calls in flight,
 *    see EndpointLoad.cost) exceeds
 *    `overrideRatio` times the second's: then the second takes the call.
 *    Equal backends therefore share exactly by weight, and a backend that is
 *    slow, stuck or overloaded loses calls at once, before any ejection.
 *    During its first `warmupMs` a newcomer is priced at the neutral
 *    latency (a cold process answers its first calls late) and is not
 *    ejected for its mean; stuck calls and silence count from the start.
 *
 * Ejection (reviewEjections, on a timer): a backend whose mean latency
 * (oldest outstanding call's age included) exceeds `ejectRatio` times the
 * median of its peers, and by at least `ejectMinGapMs` (the mean is first
 * shrunk towards the median as if `ejectPriorSamples` calls at the median
 * had joined it: one slow answer among a thousand barely moves a busy
 * backend's mean, but it is the whole mean of one that gets a few calls a
 * second, as each of a thousand backends does), or that has been
 * silent (calls sent, none answered) for longer than `stallRatio` times the
 * median (and by `stallMinGapMs`), leaves the rotation and gets probes only;
 * it comes back once it answers and its mean falls under `readmitRatio`
 * times the median, and not before `baseEjectionMs` x its recent ejections. At most max(1, ceil(n/2) - 1) of n
 * backends are out at once, none when n = 1: a brownout of every backend
 * ejects nobody.
 */
export interface LoadAwareTuning {
  overrideRatio: number;
  /** A backend silent (calls unanswered) for longer than max(stallRatio x median, median + stallMinGapMs) is ejected. */
  stallRatio: number;
  stallMinGapMs: number;
  probeIntervalMs: number;
  ejectRatio: number;
  ejectMinGapMs: number;
  ejectPriorSamples: number;
  readmitRatio: number;
  /** A backend is not ejected for its mean latency during its first warmupMs (a cold process is slow at first); silence still counts. */
  warmupMs: number;
  /**
   * An ejected backend stays out at least baseEjectionMs x the times it was
   * ejected recently (at most maxEjectionMs), as gRPC's outlier detection
   * does: one that keeps coming back slow stays out longer and longer. The
   * count is forgotten after maxEjectionMs x 2 without an ejection.
   */
  baseEjectionMs: number;
  maxEjectionMs: number;
}

export const DEFAULT_TUNING: LoadAwareTuning = {
  overrideRatio: 3,
  stallRatio: 3,
  stallMinGapMs: 100,
  probeIntervalMs: 200,
  ejectRatio: 4,
  ejectMinGapMs: 10,
  ejectPriorSamples: 3,
  readmitRatio: 1.5,
  warmupMs: 1_000,
  baseEjectionMs: 250,
  maxEjectionMs: 5_000,
};

/** One READY backend as the picker sees it; entries outlive pickers (the state is the balancer's). */
export interface PickEntry {
  load: EndpointLoad;
  ejected: boolean;
  /** Smooth weighted round robin's running weight. */
  current: number;
  lastPickedAt: number;
  /** When it joined (the warm-up runs from here). */
  since: number;
  /** When it was last ejected, and how many times recently (see LoadAwareTuning.baseEjectionMs). */
  ejectedAt: number;
  ejections: number;
}

export function newPickEntry(load: EndpointLoad, since = 0): PickEntry {
  return { load, ejected: false, current: 0, lastPickedAt: 0, since, ejectedAt: 0, ejections: 0 };
}

/** Mark `e` ejected (true) or back (false) at `now`, keeping the ejection count the minimum time out grows with. */
export function markEjected(e: PickEntry, ejected: boolean, now: number, tuning: LoadAwareTuning): void {
  if (ejected && !e.ejected) {
    if (now - e.ejectedAt > 2 * tuning.maxEjectionMs) e.ejections = 0;
    e.ejections++;
    e.ejectedAt = now;
  }
  e.ejected = ejected;
}

/** What one pass over the pool learns besides the pick: totals for the fair shares. */
interface WeightedPass {
  pick: PickEntry | undefined;
  totalWeight: number;
  totalOutstanding: number;
}

/** Smooth weighted round robin (nginx): O(n), exact shares, interleaved. */
export function nextWeighted(entries: PickEntry[]): PickEntry | undefined {
  return weightedPass(entries).pick;
}

function weightedPass(entries: PickEntry[]): WeightedPass {
  let best: PickEntry | undefined;
  let total = 0;
  let out = 0;
  for (const e of entries) {
    e.current += e.load.weight;
    total += e.load.weight;
    out += e.load.outstanding;
    if (!best || e.current > best.current) best = e;
  }
  if (best) best.current -= total;
  return { pick: best, totalWeight: total, totalOutstanding: out };
}

/** Lower median (for an even count, the smaller middle value): the peers' typical latency. */
export function lowerMedian(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[(sorted.length - 1) >> 1];
}

export interface PickContext {
  now: number;
  /** Latency assumed for a backend with no sample yet (its peers' median). */
  neutralMs: number;
  /** Uniform in [0, 1). */
  random: () => number;
  tuning: LoadAwareTuning;
  /**
   * With a sampler (large pools): calls in flight over the pool, kept by the
   * caller, since summing them is the O(n) scan the sampler avoids.
   */
  totalOutstanding?: number;
}

/** Pools larger than this draw the first candidate with a WeightedSampler instead of smooth weighted round robin. */
export const LARGE_POOL = 64;

/**
 * Weighted random draws over a fixed pool: prefix sums of the weights and a
 * binary search, O(log n) a pick. Smooth weighted round robin scans the
 * whole pool on every pick (18 µs over 1,000 backends, against 1.5 µs over
 * 3); its exact interleaving matters for a few backends, while over many
 * the shares of random draws are as close to the weights as anyone can
 * see. Build one per picker (the pool and its weights are fixed for its life).
 */
export class WeightedSampler {
  private readonly cumulative: Float64Array;
  readonly totalWeight: number;

  constructor(private readonly entries: PickEntry[]) {
    this.cumulative = new Float64Array(entries.length);
    let acc = 0;
    entries.forEach((e, i) => (this.cumulative[i] = acc += e.load.weight));
    this.totalWeight = acc;
  }

  draw(random: () => number): PickEntry | undefined {
    if (this.entries.length === 0) return undefined;
    const x = random() * this.totalWeight;
    let lo = 0;
    let hi = this.entries.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cumulative[mid] > x) hi = mid;
      else lo = mid + 1;
    }
    return this.entries[lo];
  }
}

/**
 * One pick among `eligible` (not ejected) and `ejected` READY backends;
 * undefined only when both are empty. `sampler`, built over `eligible`,
 * draws the first candidate for a large pool (see WeightedSampler).
 */
export function choose(eligible: PickEntry[], ejected: PickEntry[], ctx: PickContext, sampler?: WeightedSampler): PickEntry | undefined {
  for (const e of ejected) {
    if (e.load.outstanding === 0 && ctx.now - e.lastPickedAt >= ctx.tuning.probeIntervalMs) return picked(e, ctx.now);
  }
  const pool = eligible.length > 0 ? eligible : ejected;
  const { pick: first, totalWeight, totalOutstanding } =
    sampler && pool === eligible && ctx.totalOutstanding !== undefined
      ? { pick: sampler.draw(ctx.random), totalWeight: sampler.totalWeight, totalOutstanding: ctx.totalOutstanding }
      : weightedPass(pool);
  if (!first || pool.length === 1) return first && picked(first, ctx.now);
  let i = Math.floor(ctx.random() * (pool.length - 1));
  if (pool[i] === first) i = pool.length - 1; // a uniform draw among the others
  const second = pool[i];
  const fair = (e: PickEntry) => (totalOutstanding * e.load.weight) / totalWeight;
  const warming = (e: PickEntry) => ctx.now - e.since < ctx.tuning.warmupMs;
  const a = first.load.cost(ctx.now, ctx.neutralMs, fair(first), warming(first));
  const b = second.load.cost(ctx.now, ctx.neutralMs, fair(second), warming(second));
  return picked(a > ctx.tuning.overrideRatio * b ? second : first, ctx.now);
}

function picked(e: PickEntry, now: number): PickEntry {
  e.lastPickedAt = now;
  return e;
}

/** How many of n backends may be ejected at once. */
export function maxEjected(n: number): number {
  return n < 2 ? 0 : Math.max(1, Math.ceil(n / 2) - 1);
}

export interface EjectionReview {
  /** The peers' median mean latency, ms (undefined when nothing is measured yet). */
  referenceMs: number | undefined;
  eject: PickEntry[];
  readmit: PickEntry[];
}

/** Which backends to eject and which to re-admit now (see the file comment). Does not change the entries. */
export function reviewEjections(entries: PickEntry[], now: number, tuning: LoadAwareTuning): EjectionReview {
  const lat = new Map<PickEntry, number>();
  for (const e of entries) {
    const m = e.load.meanLatencyMs(now);
    if (m !== undefined) lat.set(e, m);
  }
  const ref = lowerMedian([...lat.values()]);
  // What a backend is judged on: its mean shrunk towards the median by the prior, never below its oldest call's age.
  const evidence = (e: PickEntry) => {
    const m = lat.get(e);
    if (m === undefined) return undefined;
    const n = e.load.meanSampleCount;
    return Math.max((m * n + ref! * tuning.ejectPriorSamples) / (n + tuning.ejectPriorSamples), e.load.oldestAgeMs(now));
  };
  if (ref === undefined) return { referenceMs: undefined, eject: [], readmit: [] };
  const stallLimit = Math.max(tuning.stallRatio * ref, ref + tuning.stallMinGapMs);
  const minOut = (e: PickEntry) => Math.min(tuning.maxEjectionMs, tuning.baseEjectionMs * e.ejections);
  const readmit = entries.filter((e) => e.ejected && now - e.ejectedAt >= minOut(e) && e.load.stallMs(now) <= stallLimit && (lat.get(e) ?? 0) <= Math.max(tuning.readmitRatio * ref, ref + tuning.ejectMinGapMs / 2));
  const stillOut = entries.filter((e) => e.ejected).length - readmit.length;
  const room = maxEjected(entries.length) - stillOut;
  const eject =
    room <= 0
      ? []
      : entries
          .filter((e) => {
            if (e.ejected) return false;
            if (e.load.stallMs(now) > stallLimit) return true;
            const x = now - e.since >= tuning.warmupMs ? evidence(e) : undefined;
            return x !== undefined && x > tuning.ejectRatio * ref && x > ref + tuning.ejectMinGapMs;
          })
          .sort((x, y) => Math.max(lat.get(y) ?? 0, y.load.stallMs(now)) - Math.max(lat.get(x) ?? 0, x.load.stallMs(now)))
          .slice(0, room);
  return { referenceMs: ref, eject, readmit };
}
