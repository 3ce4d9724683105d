import { describe, expect, it } from 'vitest';
import { EndpointLoad } from '../balancer/endpoint-load';
import { choose, DEFAULT_TUNING, LARGE_POOL, newPickEntry, nextWeighted, WeightedSampler, type PickContext, type PickEntry } from '../balancer/picker-load-aware';
import { markEjected, maxEjected } from '../balancer/ejection-time';
import { reviewEjections } from '../balancer/ejection-review';
import { RetryBudget } from '../balancer/retry-budget';

/** The load-aware policy's pick math, pure: no grpc-js, no network, a fake clock. */

function entries(...weights: number[]): PickEntry[] {
  // Joined long ago (-10 s): past the warm-up.
  return weights.map((w, i) => newPickEntry(new EndpointLoad(`10.0.0.${i + 1}:80`, w, 300), -10_000));
}

/** A seeded PRNG (mulberry32), so every run draws the same numbers. */
function rng(seed = 1): () => number {
  let a = seed;
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function ctx(es: PickEntry[], now: number, random = rng()): PickContext {
  return { now, neutralMs: 1, random, tuning: DEFAULT_TUNING };
}

/** Run `n` calls, each lasting `latency(entry)` ms, `concurrency` at a time, on a simulated clock; returns picks per entry. */
function simulate(es: PickEntry[], n: number, concurrency: number, latency: (e: PickEntry) => number): Map<PickEntry, number> {
  const counts = new Map<PickEntry, number>(es.map((e) => [e, 0]));
  const random = rng(7);
  let now = 0;
  const inFlight: { end: number; e: PickEntry; token: number }[] = [];
  for (let i = 0; i < n; i++) {
    if (inFlight.length >= concurrency) {
      inFlight.sort((a, b) => a.end - b.end);
      const done = inFlight.shift()!;
      now = Math.max(now, done.end);
      done.e.load.end(done.token, now);
    }
    const e = choose(es.filter((x) => !x.ejected), es.filter((x) => x.ejected), ctx(es, now, random))!;
    counts.set(e, counts.get(e)! + 1);
    inFlight.push({ end: now + latency(e), e, token: e.load.start(now) });
    if (i % 50 === 0) {
      const r = reviewEjections(es, now, DEFAULT_TUNING);
      for (const x of r.readmit) markEjected(x, undefined, now, DEFAULT_TUNING);
      for (const x of r.eject) markEjected(x, r.cause.get(x), now, DEFAULT_TUNING);
    }
  }
  return counts;
}

describe('peak EWMA per endpoint', () => {
  it('takes a slower sample at once and forgets it with time, not with call count', () => {
    const l = new EndpointLoad('a:1', 100, 300);
    l.observe(1, 0);
    l.observe(50, 10);
    expect(l.latencyMs(10, 1)).toBe(50);
    l.observe(1, 20); // 10 ms later: barely decayed
    expect(l.latencyMs(20, 1)).toBeGreaterThan(45);
    l.observe(1, 1520); // 1.5 s later: five decay constants
    expect(l.latencyMs(1520, 1)).toBeLessThan(2);
  });

  it('counts outstanding calls; the oldest one\'s age and the silence of a backend that stopped answering raise its latency', () => {
    const l = new EndpointLoad('a:1', 100, 300);
    l.observe(2, 0);
    const t1 = l.start(100);
    l.start(105);
    expect(l.outstanding).toBe(2);
    expect(l.latencyMs(400, 1)).toBe(300);
    // A hedge won elsewhere: the attempt is cancelled, unanswered; the backend is still silent.
    l.end(t1, 400, 100, false, false);
    expect(l.outstanding).toBe(1);
    expect(l.stallMs(600)).toBe(500);
    expect(l.meanLatencyMs(600)).toBeGreaterThanOrEqual(495); // the other call's age
    l.end(t1, 700); // ending twice is a no-op
    expect(l.outstanding).toBe(1);
  });

  it('a new backend is priced at the neutral latency (its peers\' median), neither starved nor flooded', () => {
    const l = new EndpointLoad('a:1', 100, 300);
    expect(l.measured).toBe(false);
    expect(l.latencyMs(0, 7)).toBe(7);
    expect(l.cost(0, 7, 0)).toBe(7);
  });

  it('a peak nobody re-measures relaxes towards the neutral latency with time (no starvation)', () => {
    const l = new EndpointLoad('a:1', 100, 300);
    l.observe(40, 0);
    expect(l.latencyMs(0, 2)).toBe(40);
    expect(l.latencyMs(900, 2)).toBeLessThan(4);
  });

  it('cost is latency x overload against the fair share of calls in flight: no penalty up to the share, proportional above it', () => {
    const l = new EndpointLoad('a:1', 10, 300);
    l.observe(5, 0);
    expect(l.cost(0, 1, 0.8)).toBe(5); // idle, share 0.8
    l.start(0);
    l.start(0);
    expect(l.cost(0, 1, 0.8)).toBeCloseTo((5 * 3) / 1.8, 9); // 2 in flight where 0.8 is fair
    expect(l.cost(0, 1, 7)).toBe(5); // under its share
  });
});

describe('choosing', () => {
  it('smooth weighted round robin gives exact shares, interleaved', () => {
    const es = entries(5, 1, 1);
    const seq = Array.from({ length: 7 }, () => es.indexOf(nextWeighted(es)!));
    expect(seq.filter((i) => i === 0)).toHaveLength(5);
    expect(seq).toEqual([0, 0, 1, 0, 2, 0, 0]);
  });

  it('equal backends at equal latency share exactly (max/min 1.000 over 30,000 calls)', () => {
    const es = entries(100, 100, 100);
    const counts = [...simulate(es, 30_000, 16, () => 2).values()];
    expect(Math.max(...counts) / Math.min(...counts)).toBeLessThanOrEqual(1.01);
  });

  it('weights 90/10 give 90/10 within a point over 10,000 calls', () => {
    const es = entries(90, 10);
    const counts = simulate(es, 10_000, 8, () => 2);
    expect(counts.get(es[1])! / 10_000).toBeGreaterThan(0.09);
    expect(counts.get(es[1])! / 10_000).toBeLessThan(0.11);
  });

  it('weights hold over their whole range under latency noise, busy or nearly idle: 1000 beside two 100s gets 83% +- 3, 1 beside two 100s at most 1%', () => {
    // Every backend alike, 1 ms calls with one in ten taking 6 ms (a
    // descheduled process, a GC pause): over 3x, so the picker overrides on
    // them, but too close to the peers to eject anyone. The overrides that
    // noise causes must not move shares off the weights.
    const noisy = (seed: number) => {
      const r = rng(seed);
      return () => (r() < 0.1 ? 6 : 1);
    };
    for (const concurrency of [8, 1]) {
      const heavy = entries(1000, 100, 100);
      const h = simulate(heavy, 30_000, concurrency, noisy(11));
      const light = entries(1, 100, 100);
      const l = simulate(light, 30_000, concurrency, noisy(12));
      const hs = (100 * h.get(heavy[0])!) / 30_000;
      const ls = (100 * l.get(light[0])!) / 30_000;
      console.log(`[pick math] weights under noise, ${concurrency} in flight: 1000/100/100 -> ${hs.toFixed(1)}%, 1/100/100 -> ${ls.toFixed(2)}%`);
      expect(Math.abs(hs - 1000 / 12)).toBeLessThanOrEqual(3);
      expect(ls).toBeLessThanOrEqual(1);
    }
  });

  it('a backend 20x slower than its peers is ejected and gets only probes (well under 10%)', () => {
    const es = entries(100, 100, 100);
    const counts = simulate(es, 30_000, 16, (e) => (e === es[0] ? 40 : 2));
    const share = counts.get(es[0])! / 30_000;
    expect(share).toBeLessThan(0.02);
    expect(es[0].ejected).toBe(true);
  });

  it('a slow backend that recovers wins its share back within seconds', () => {
    const es = entries(100, 100, 100);
    let slow = true;
    const random = rng(3);
    let now = 0;
    let recoveredAt = -1;
    const picksAfter: number[] = [];
    // One call at a time every ms for 10 simulated s; the slow one recovers at 3 s.
    for (let i = 0; i < 10_000; i++, now++) {
      if (now === 3000) slow = false;
      const e = choose(es.filter((x) => !x.ejected), es.filter((x) => x.ejected), ctx(es, now, random))!;
      const t = e.load.start(now);
      e.load.end(t, now + (e === es[0] && slow ? 40 : 1));
      if (now % 25 === 0) {
        const r = reviewEjections(es, now, DEFAULT_TUNING);
        for (const x of r.readmit) markEjected(x, undefined, now, DEFAULT_TUNING);
        for (const x of r.eject) markEjected(x, r.cause.get(x), now, DEFAULT_TUNING);
      }
      if (!slow && recoveredAt < 0 && !es[0].ejected) recoveredAt = now;
      if (now >= 6000) picksAfter.push(e === es[0] ? 1 : 0);
    }
    expect(recoveredAt).toBeGreaterThan(3000);
    expect(recoveredAt - 3000).toBeLessThan(3000);
    const shareAfter = picksAfter.reduce((a, b) => a + b, 0) / picksAfter.length;
    expect(shareAfter).toBeGreaterThan(0.25);
  });

  it('the first candidate loses to the second only when its cost is over overrideRatio times higher, and by overrideMinGapMs', () => {
    // 10 > 3 x 3, but only 7 ms more (< overrideMinGapMs): a blip at light load, not slowness; each keeps its turn.
    const near = entries(100, 100);
    near[0].load.observe(10, 0);
    near[1].load.observe(3, 0);
    const blips = Array.from({ length: 10 }, () => choose(near, [], ctx(near, 0)));
    expect(blips.filter((p) => p === near[0]).length).toBe(5);
    const es = entries(100, 100);
    es[0].load.observe(80, 0);
    es[1].load.observe(20, 0);
    // 80 > 3 x 20, and 60 ms more: the second wins whenever the first is drawn.
    const picks = Array.from({ length: 10 }, () => choose(es, [], ctx(es, 0)));
    expect(picks.every((p) => p === es[1])).toBe(true);
    // 80 < 3 x 30: each keeps its round-robin turn, and the one passed over ten
    // times gets back what it lost, but no more than one round's credit (one turn here).
    es[1].load.observe(30, 0);
    const picks2 = Array.from({ length: 10 }, () => choose(es, [], ctx(es, 0)));
    expect(picks2.filter((p) => p === es[0]).length).toBe(6);
    const picks3 = Array.from({ length: 10 }, () => choose(es, [], ctx(es, 0)));
    expect(picks3.filter((p) => p === es[0]).length).toBe(5);
  });

  it('an ejected backend is probed once per probeIntervalMs, and only with nothing in flight', () => {
    const es = entries(100, 100, 100);
    markEjected(es[0], 'latency', 0, DEFAULT_TUNING);
    const eligible = es.slice(1);
    let probes = 0;
    for (let now = 1000; now < 2000; now++) if (choose(eligible, [es[0]], ctx(es, now)) === es[0]) probes++;
    expect(probes).toBe(Math.floor(1000 / DEFAULT_TUNING.probeIntervalMs));
    es[0].load.start(2000);
    expect(choose(eligible, [es[0]], ctx(es, 5000))).not.toBe(es[0]);
  });
});

describe('ejection', () => {
  it('never ejects the only backend, nor more than max(1, ceil(n/2)-1); a brownout of all ejects none', () => {
    expect([1, 2, 3, 4, 5, 10].map((n) => maxEjected(n))).toEqual([0, 1, 1, 1, 2, 4]);
    const one = entries(100);
    one[0].load.observe(1000, 0);
    expect(reviewEjections(one, 0, DEFAULT_TUNING).eject).toEqual([]);
    const all = entries(100, 100, 100);
    for (const e of all) e.load.observe(40, 0);
    expect(reviewEjections(all, 0, DEFAULT_TUNING).eject).toEqual([]);
    const two = entries(100, 100, 100);
    two[0].load.observe(100, 0);
    two[1].load.observe(100, 0);
    two[2].load.observe(1, 0);
    // The median is slow: the slow pair is the norm, the fast one is not an outlier.
    expect(reviewEjections(two, 0, DEFAULT_TUNING).eject).toEqual([]);
  });

  it('a backend whose oldest call is far older than its peers\' latency is ejected; so is one silent since (calls cancelled, none answered)', () => {
    const es = entries(100, 100, 100);
    for (const e of es) e.load.observe(2, 0);
    const t = es[0].load.start(10);
    expect(reviewEjections(es, 15, DEFAULT_TUNING).eject).toEqual([]);
    expect(reviewEjections(es, 25, DEFAULT_TUNING).eject).toEqual([es[0]]);
    // Its call was hedged elsewhere and cancelled at 20 ms: no call in flight, but no answer either.
    es[0].load.end(t, 20, 0, false, false);
    expect(es[0].load.stallMs(100)).toBe(90);
    expect(reviewEjections(es, 100, DEFAULT_TUNING).eject).toEqual([]); // silent 90 ms: under median + 100 ms
    expect(reviewEjections(es, 150, DEFAULT_TUNING).eject).toEqual([es[0]]);
  });

  it('a backend that gets a few calls a second (one of a thousand) is not ejected for one slow answer; a run of them ejects it', () => {
    // 1,000 backends at ~3 calls/s each: one answer every 300 ms, 3.5 ms as a rule.
    const es = entries(...Array.from({ length: 1_000 }, () => 100));
    for (let t = 0; t <= 3_000; t += 300) for (const e of es) e.load.observe(3.5, t);
    // A 40 ms client pause lands on the calls of 16 of them.
    for (const e of es.slice(0, 16)) e.load.observe(40, 3_300);
    expect(reviewEjections(es, 3_300, DEFAULT_TUNING).eject).toEqual([]);
    // Without the prior, that one answer is the mean: all 16 would go.
    expect(reviewEjections(es, 3_300, { ...DEFAULT_TUNING, ejectPriorSamples: 1e-9 }).eject).toHaveLength(16);
    // One of them answers slowly call after call: it goes.
    for (const t of [3_600, 3_900, 4_200]) es[0].load.observe(40, t);
    expect(reviewEjections(es, 4_200, DEFAULT_TUNING).eject).toEqual([es[0]]);
  });

  it('a newcomer is not ejected for its (cold) mean latency during its warm-up; silence still ejects it', () => {
    const es = entries(100, 100, 100);
    for (const e of es.slice(1)) e.load.observe(2, 0);
    es[0].since = 0;
    es[0].load.observe(80, 10); // its first call: a cold process
    expect(reviewEjections(es, 500, DEFAULT_TUNING).eject).toEqual([]);
    expect(reviewEjections(es, 1_000, DEFAULT_TUNING).eject).toEqual([es[0]]);
    es[0].load.observe(2, 1_001);
    es[0].since = 1_001;
    es[0].load.start(1_002);
    expect(reviewEjections(es, 1_200, DEFAULT_TUNING).eject).toEqual([es[0]]);
  });
});

describe('ejection time', () => {
  it('grows with each recent ejection (250 ms x multiplier, at most 5 s); the multiplier decays by one per 5 s back in the rotation', () => {
    const es = entries(100, 100, 100);
    for (const e of es) e.load.observe(2, 0);
    const out = es[0];
    const minOutAt = (now: number) => {
      markEjected(out, 'latency', now, DEFAULT_TUNING);
      // Healthy again at once: re-admitted only once its time out is served.
      let t = now;
      while (!reviewEjections(es, t, DEFAULT_TUNING).readmit.includes(out)) t += 10;
      markEjected(out, undefined, t, DEFAULT_TUNING);
      return t - now;
    };
    expect([minOutAt(1_000), minOutAt(2_000), minOutAt(3_000)]).toEqual([250, 500, 750]);
    expect(minOutAt(20_000)).toBe(250);
  });
});

describe('large pools (WeightedSampler)', () => {
  it('draws shares within 1 point of the weights over 1,000 backends, and the picker still avoids a stuck one', () => {
    // 1,000 backends: 900 at weight 100, 100 at weight 900 (half the total weight).
    const es = entries(...Array.from({ length: 1000 }, (_, i) => (i < 900 ? 100 : 900)));
    expect(es.length).toBeGreaterThan(LARGE_POOL);
    const sampler = new WeightedSampler(es);
    expect(sampler.totalWeight).toBe(900 * 100 + 100 * 900);
    const random = rng(3);
    let heavy = 0;
    const n = 100_000;
    let outstanding = 0;
    // A stuck backend: a call in flight for 5 s, far above everyone's 1 ms.
    const stuck = es[5];
    stuck.load.start(0);
    outstanding++;
    let toStuck = 0;
    for (let i = 0; i < n; i++) {
      const now = 5_000 + i * 0.01;
      const e = choose(es, [], { now, neutralMs: 1, random, tuning: DEFAULT_TUNING, totalOutstanding: outstanding }, sampler)!;
      if (es.indexOf(e) >= 900) heavy++;
      if (e === stuck) toStuck++;
    }
    expect(Math.abs((100 * heavy) / n - 50)).toBeLessThan(1);
    // Its own share would be 100 / 180,000 of the draws (about 56); the cost check sends them elsewhere.
    expect(toStuck).toBe(0);
  });

  it('draws each backend in proportion to its weight (binary search bounds)', () => {
    const es = entries(1, 2, 3, 4);
    const sampler = new WeightedSampler(es);
    const at = (x: number) => es.indexOf(sampler.draw(() => x)!);
    expect([0, 0.099, 0.1, 0.299, 0.3, 0.599, 0.6, 0.9999].map(at)).toEqual([0, 0, 1, 1, 2, 2, 3, 3]);
    expect(new WeightedSampler([]).draw(Math.random)).toBeUndefined();
  });
});

describe('retry budget', () => {
  it('allows 20% of calls over the window plus 10 per second of window, and refuses the rest', () => {
    let now = 0;
    const b = new RetryBudget({ ratio: 0.2, minPerSecond: 10, windowMs: 10_000 }, () => now);
    for (let i = 0; i < 1000; i++) b.deposit();
    let granted = 0;
    for (let i = 0; i < 1000; i++) if (b.withdraw()) granted++;
    expect(granted).toBe(200 + 100);
    expect(b.refused).toBe(700);
    // The window slides: 11 s later the old calls and extras are forgotten; only the floor remains.
    now = 11_000;
    granted = 0;
    for (let i = 0; i < 1000; i++) if (b.withdraw()) granted++;
    expect(granted).toBe(100);
  });
});
