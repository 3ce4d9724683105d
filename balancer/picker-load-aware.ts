import type { EndpointLoad } from './endpoint-load';
import { EndpointFailures } from './endpoint-failures';
import type { LoadAwareTuning } from './picker-load-aware-tuning';

export { DEFAULT_TUNING, type LoadAwareTuning } from './picker-load-aware-tuning';

/**
 * The pick math of the `load_aware` policy, pure (clock and random source
 * passed in) so it is unit-tested without grpc-js or a network.
 *
 * How a backend is chosen, per call:
 * 1. Probe: an ejected backend with no call in flight, past its time out
 *    (`probeFrom`), that has not been tried for `probeIntervalMs` gets this
 *    call, so it is measured again and wins its share back once it recovers
 *    (no starvation of the slow).
 * 2. First candidate: smooth weighted round robin (nginx's) over the backends
 *    not ejected, by pick weight (the registry's weight x the failure
 *    factor, see pickWeight). Alone, this gives every backend exactly its
 *    weight's share.
 * 3. Second candidate: one other such backend, drawn by pick weight (power
 *    of two choices). Drawn by weight, not uniformly: a weight-1 backend
 *    beside weight-100 ones is offered as an alternative once in a hundred
 *    picks, not every other one.
 * 4. The first candidate is kept unless its cost (peak EWMA latency x
 *    its overload against its weight's fair share of the calls in flight,
 *    see EndpointLoad.cost) exceeds `overrideRatio` times the second's (the
 *    second's divided by its failure factor), and by `overrideMinGapMs` at
 *    least (a GC pause at light load is not slowness): then the second takes the call,
 *    and the round robin is told so (the first keeps its turn, the second
 *    is charged for it, each within one round's worth of credit). Overrides
 *    therefore move calls off a backend that is slow, stuck or overloaded
 *    at once, before any ejection, without moving shares off the weights
 *    when the backends are alike: the turns a backend lost to momentary
 *    noise it gets back, a backend passed over call after call loses at
 *    most one round's credit, and a recovered one gets no flood.
 *    During its first `warmupMs` a newcomer is priced at the neutral
 *    latency (a cold process answers its first calls late) and is not
 *    ejected for its mean; stuck calls and silence count from the start.
 *
 * Ejection is ejection-review.ts's; its time out, ejection-time.ts's.
 */

/** Why a backend is out of the rotation: too slow or silent for its peers, or failing more than they do. */
export type EjectionCause = 'latency' | 'failures';

/** One READY backend as the picker sees it; entries outlive pickers (the state is the balancer's). */
export class PickEntry {
  /** Smooth weighted round robin's running weight. */
  current = 0;
  lastPickedAt = 0;
  /** How its attempts have ended lately (failures as failure-codes.ts counts them). */
  readonly failures: EndpointFailures;
  /** 1, or less for a backend failing more than its peers (ejection-failures.ts); scales its pick weight. */
  failureFactor = 1;
  /** Set while ejected (ejection-time.ts markEjected is the one writer of this and the fields below). */
  ejectedFor: EjectionCause | undefined = undefined;
  /** When it was last ejected, and gRPC A50's ejection time multiplier. */
  ejectedAt = 0;
  multiplier = 0;
  /** When it last came back into the rotation (the multiplier decays from here). */
  activeSince = 0;
  /** No probe before this time (its time out, for a backend ejected for failures). */
  probeFrom = 0;

  constructor(
    readonly load: EndpointLoad,
    /** When it joined (the warm-up runs from here). */
    public since: number,
    failureDecayMs?: number,
  ) {
    this.failures = new EndpointFailures(failureDecayMs);
  }

  get ejected(): boolean {
    return this.ejectedFor !== undefined;
  }
}

export function newPickEntry(load: EndpointLoad, since = 0, failureDecayMs?: number): PickEntry {
  return new PickEntry(load, since, failureDecayMs);
}

/**
 * The weight a pick uses: the registry's weight (a drained backend's 0
 * counts 1, for the one case it is in a pool: every backend drained) x the
 * failure factor.
 */
export function pickWeight(e: PickEntry): number {
  return (e.load.weight || 1) * e.failureFactor;
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
    const w = pickWeight(e);
    e.current += w;
    total += w;
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
 * Weighted random draws over a fixed pool: prefix sums of the pick weights
 * and a binary search, O(log n) a pick. Smooth weighted round robin scans the
 * whole pool on every pick (18 µs over 1,000 backends, against 1.5 µs over
 * 3); its exact interleaving matters for a few backends, while over many
 * the shares of random draws are as close to the weights as anyone can
 * see. Build one per picker (the pool and its weights are fixed for its
 * life; the balancer makes a new picker when failure factors move).
 */
export class WeightedSampler {
  private readonly cumulative: Float64Array;
  readonly totalWeight: number;

  constructor(private readonly entries: PickEntry[]) {
    this.cumulative = new Float64Array(entries.length);
    let acc = 0;
    entries.forEach((e, i) => (this.cumulative[i] = acc += pickWeight(e)));
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

/** One of `pool` other than `first`, drawn by pick weight (`totalWeight` is the pool's). */
function secondBesides(pool: PickEntry[], first: PickEntry, totalWeight: number, random: () => number, sampler: WeightedSampler | undefined): PickEntry {
  if (sampler) {
    // A large pool: redraw; the first is rarely drawn twice, and never more than a few times.
    for (let i = 0; i < 4; i++) {
      const e = sampler.draw(random);
      if (e && e !== first) return e;
    }
    let i = Math.floor(random() * (pool.length - 1));
    if (pool[i] === first) i = pool.length - 1;
    return pool[i];
  }
  let x = random() * (totalWeight - pickWeight(first));
  let last = first;
  for (const e of pool) {
    if (e === first) continue;
    last = e;
    x -= pickWeight(e);
    if (x < 0) return e;
  }
  return last; // rounding: the last other one
}

/**
 * One pick among `eligible` (not ejected) and `ejected` READY backends;
 * undefined only when both are empty. `sampler`, built over `eligible`,
 * draws the first candidate for a large pool (see WeightedSampler).
 */
export function choose(eligible: PickEntry[], ejected: PickEntry[], ctx: PickContext, sampler?: WeightedSampler): PickEntry | undefined {
  for (const e of ejected) {
    if (e.load.outstanding === 0 && ctx.now >= e.probeFrom && ctx.now - e.lastPickedAt >= ctx.tuning.probeIntervalMs) return picked(e, ctx.now);
  }
  const pool = eligible.length > 0 ? eligible : ejected;
  const sampled = sampler !== undefined && pool === eligible && ctx.totalOutstanding !== undefined;
  const { pick: first, totalWeight, totalOutstanding } = sampled ? { pick: sampler.draw(ctx.random), totalWeight: sampler.totalWeight, totalOutstanding: ctx.totalOutstanding! } : weightedPass(pool);
  if (!first || pool.length === 1) return first && picked(first, ctx.now);
  const second = secondBesides(pool, first, totalWeight, ctx.random, sampled ? sampler : undefined);
  const fair = (e: PickEntry) => (totalOutstanding * pickWeight(e)) / totalWeight;
  const warming = (e: PickEntry) => ctx.now - e.since < ctx.tuning.warmupMs;
  // The first's failures already cut its turns (its pick weight); the second's raise its price, so a
  // failing backend, which answers fast, does not take the calls a momentarily slow one is passed over for.
  const a = first.load.cost(ctx.now, ctx.neutralMs, fair(first), warming(first));
  const b = second.load.cost(ctx.now, ctx.neutralMs, fair(second), warming(second)) / second.failureFactor;
  if (a <= ctx.tuning.overrideRatio * b || a - b < ctx.tuning.overrideMinGapMs) return picked(first, ctx.now);
  if (!sampled) {
    // The round robin charged the first for this call; it went to the second.
    first.current = Math.min(first.current + totalWeight, totalWeight);
    second.current = Math.max(second.current - totalWeight, -totalWeight);
  }
  return picked(second, ctx.now);
}

function picked(e: PickEntry, now: number): PickEntry {
  e.lastPickedAt = now;
  return e;
}
