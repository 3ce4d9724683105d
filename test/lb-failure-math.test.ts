import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { EndpointLoad } from '../balancer/endpoint-load';
import { EndpointFailures } from '../balancer/endpoint-failures';
import { BadFailureCodesError, DEFAULT_FAILURE_CODES, FailureCodes } from '../balancer/failure-codes';
import { choose, DEFAULT_TUNING, newPickEntry, type LoadAwareTuning, type PickEntry } from '../balancer/picker-load-aware';
import { failureExcess, failureFactorOf, failureReference, failureRunLimit, refreshFailureFactor } from '../balancer/ejection-failures';
import { ejectionTimeMs, markEjected, maxEjected } from '../balancer/ejection-time';
import { reviewEjections } from '../balancer/ejection-review';
import { classifyEnd } from '../balancer/load-balancer-load-aware-picker';

/**
 * How failures steer the load_aware policy, pure, on a fake clock: the
 * status table, the decayed failure rate, the peers' reference and the
 * failure factor, ejection with growing time outs and probes, the bound on
 * how many are out, and whole runs simulated call by call (one broken
 * backend, one flaky, every one flaky, one that heals), each beside what
 * round robin would do.
 */

const S = grpc.status;

function entries(n: number, weight = 100): PickEntry[] {
  return Array.from({ length: n }, (_, i) => newPickEntry(new EndpointLoad(`10.0.0.${i + 1}:80`, weight, 300), -10_000, DEFAULT_TUNING.failureDecayMs));
}

/** A seeded PRNG (mulberry32). */
function rng(seed = 1): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the balancer does with a review (load-balancer-load-aware.ts review), minus the logging. */
function applyReview(es: PickEntry[], now: number, tuning: LoadAwareTuning): { reference: number; ejected: number } {
  const r = reviewEjections(es, now, tuning);
  for (const e of r.readmit) {
    e.load.forgetPeak();
    e.failures.reset();
    markEjected(e, undefined, now, tuning);
  }
  for (const e of r.extend) markEjected(e, 'failures', now, tuning);
  for (const e of r.eject) markEjected(e, r.cause.get(e), now, tuning);
  for (const e of es) refreshFailureFactor(e, now, r.failureReference, tuning);
  return { reference: r.failureReference, ejected: r.eject.length };
}

interface Run {
  calls: number;
  failed: number;
  /** Calls each backend received. */
  received: number[];
  /** Ejections decided (extensions not included). */
  ejections: number;
  /** Per simulated second: calls received by each backend. */
  perSecond: number[][];
}

/**
 * `seconds` of closed-loop load at `concurrency`, every call 2 ms, through
 * the load_aware pick math (or plain round robin), reviews every 25 ms;
 * `fails(i, t)` says whether backend i fails a call at simulated time t
 * (each backend fails evenly spread calls, as the test peer does).
 */
function run(n: number, seconds: number, fails: (i: number, t: number) => number, policy: 'load_aware' | 'round_robin' = 'load_aware', tuning = DEFAULT_TUNING, concurrency = 16): Run {
  const es = entries(n);
  const random = rng(5);
  const credit = new Array(n).fill(0);
  const out: Run = { calls: 0, failed: 0, received: new Array(n).fill(0), ejections: 0, perSecond: [] };
  let reference = 0;
  let rr = 0;
  const inFlight: { end: number; e: PickEntry; i: number; token: number; fail: boolean }[] = [];
  let now = 0;
  let nextReview = 0;
  while (now < seconds * 1000) {
    while (inFlight.length < concurrency) {
      let e: PickEntry;
      if (policy === 'round_robin') e = es[rr++ % n];
      else e = choose(es.filter((x) => !x.ejected), es.filter((x) => x.ejected), { now, neutralMs: 2, random, tuning })!;
      const i = es.indexOf(e);
      credit[i] += fails(i, now);
      const fail = credit[i] >= 1 - 1e-9;
      if (fail) credit[i] -= 1;
      inFlight.push({ end: now + 2 + random() * 0.5, e, i, token: e.load.start(now), fail });
      out.calls++;
      out.received[i]++;
      const sec = Math.floor(now / 1000);
      (out.perSecond[sec] ??= new Array(n).fill(0))[i]++;
    }
    inFlight.sort((a, b) => a.end - b.end);
    const done = inFlight.shift()!;
    now = done.end;
    if (done.fail) {
      out.failed++;
      done.e.load.endUnmeasured(done.token, now, true);
    } else done.e.load.end(done.token, now);
    done.e.failures.record(done.fail, now);
    refreshFailureFactor(done.e, now, reference, tuning);
    if (policy === 'load_aware' && now >= nextReview) {
      nextReview = now + 25;
      const r = applyReview(es, now, tuning);
      reference = r.reference;
      out.ejections += r.ejected;
    }
  }
  return out;
}

const pct = (x: number, of: number) => (100 * x) / Math.max(1, of);

describe('the failure table (failure-codes.ts)', () => {
  it('counts the backend\'s faults by default, DEADLINE_EXCEEDED only when the backend was silent, never the caller\'s', () => {
    const t = FailureCodes.DEFAULT;
    expect([...t.names]).toEqual([...DEFAULT_FAILURE_CODES]);
    for (const c of [S.UNAVAILABLE, S.INTERNAL, S.UNKNOWN, S.DATA_LOSS, S.RESOURCE_EXHAUSTED, S.UNIMPLEMENTED]) expect(t.counts(c, false)).toBe(true);
    expect(t.counts(S.DEADLINE_EXCEEDED, true)).toBe(true);
    expect(t.counts(S.DEADLINE_EXCEEDED, false)).toBe(false);
    for (const c of [S.OK, S.CANCELLED, S.INVALID_ARGUMENT, S.NOT_FOUND, S.ALREADY_EXISTS, S.PERMISSION_DENIED, S.UNAUTHENTICATED, S.FAILED_PRECONDITION, S.ABORTED, S.OUT_OF_RANGE]) expect(t.counts(c, true)).toBe(false);
  });

  it('parses names in any case, `none`; refuses unknown names, OK, CANCELLED and empty entries with one line', () => {
    expect([...FailureCodes.parse('internal, Unknown').names]).toEqual(['INTERNAL', 'UNKNOWN']);
    expect(FailureCodes.parse('none').size).toBe(0);
    expect(FailureCodes.parse('INTERNAL').counts(S.UNAVAILABLE, false)).toBe(false);
    for (const bad of ['INTERNAL,BOGUS', 'OK', 'cancelled', 'INTERNAL,,UNKNOWN']) {
      expect(() => FailureCodes.parse(bad)).toThrow(BadFailureCodesError);
      try {
        FailureCodes.parse(bad);
      } catch (err) {
        expect((err as Error).message).not.toContain('\n');
      }
    }
  });

  it('books each attempt end: a fault, an answer, or no answer (hedge losers, transport resets) that counts neither way', () => {
    const t = FailureCodes.DEFAULT;
    expect(classifyEnd(S.OK, '', false, t)).toBe('ok');
    expect(classifyEnd(S.INVALID_ARGUMENT, 'bad name', false, t)).toBe('answered');
    expect(classifyEnd(S.INTERNAL, 'boom', false, t)).toBe('fault');
    expect(classifyEnd(S.INTERNAL, 'Received RST_STREAM with code 2 triggered by internal client error: Session closed with error code 2', false, t)).toBe('unanswered');
    expect(classifyEnd(S.CANCELLED, 'another attempt answered first', true, t)).toBe('unanswered');
    expect(classifyEnd(S.DEADLINE_EXCEEDED, 'Deadline exceeded', true, t)).toBe('fault');
    expect(classifyEnd(S.DEADLINE_EXCEEDED, 'Deadline exceeded', false, t)).toBe('unanswered');
    expect(classifyEnd(S.UNAVAILABLE, 'refused', false, FailureCodes.parse('INTERNAL'))).toBe('unanswered');
  });
});

describe('failure rate and factor (endpoint-failures.ts, ejection-failures.ts)', () => {
  it('decays by wall time: the rate stands, the volume it stands on fades, and a reset forgets it', () => {
    const f = new EndpointFailures(1_000);
    for (let i = 0; i < 10; i++) f.record(i < 2, i);
    expect(f.rate()).toBeCloseTo(0.2, 2);
    expect(f.volume(9)).toBeCloseTo(10, 0);
    expect(f.volume(1_009)).toBeCloseTo(10 / Math.E, 0);
    expect(f.last).toEqual({ at: 9, failed: false });
    f.record(true, 3_009); // 3 s later the old ten weigh e^-3 each
    expect(f.rate()!).toBeGreaterThan(0.7);
    f.reset();
    expect(f.rate()).toBeUndefined();
    expect(f.volume(4_000)).toBe(0);
  });

  it('judges a backend against the better quarter of its peers, with a prior: three failures in a row stand out, one in a thousand does not', () => {
    const es = entries(4);
    for (let i = 0; i < 1000; i++) es.forEach((e, j) => e.failures.record(j === 1 && i % 10 === 0, 0));
    expect(failureReference(es, 0)).toBe(0);
    expect(failureExcess(es[1], 0, 0, DEFAULT_TUNING)).toBeCloseTo(0.1, 2);
    const lone = entries(1)[0];
    lone.failures.record(true, 0);
    expect(failureExcess(lone, 0, 0, DEFAULT_TUNING)).toBeCloseTo(1 / 6, 5);
    lone.failures.record(true, 0);
    lone.failures.record(true, 0);
    expect(failureExcess(lone, 0, 0, DEFAULT_TUNING)).toBeGreaterThan(DEFAULT_TUNING.failureEjectExcess);
    const busy = entries(1)[0];
    for (let i = 0; i < 1000; i++) busy.failures.record(i === 500, 0);
    expect(failureExcess(busy, 0, 0, DEFAULT_TUNING)).toBeLessThan(0.002);
    // Every backend failing 10%: the reference is 10%, nobody is in excess.
    const all = entries(4);
    for (let i = 0; i < 1000; i++) all.forEach((e) => e.failures.record(i % 10 === 0, 0));
    expect(failureReference(all, 0)).toBeCloseTo(0.1, 5);
    for (const e of all) expect(failureExcess(e, 0, 0.1, DEFAULT_TUNING)).toBeLessThan(0.01);
  });

  it('scales the pick weight linearly: 20% above the peers keeps a fifth, 25% (the ejection line) keeps the floor', () => {
    expect(failureFactorOf(0, DEFAULT_TUNING)).toBe(1);
    expect(failureFactorOf(0.2, DEFAULT_TUNING)).toBeCloseTo(0.2, 9);
    expect(failureFactorOf(0.25, DEFAULT_TUNING)).toBe(0.02);
    expect(failureFactorOf(1, DEFAULT_TUNING)).toBe(0.02);
  });
});

describe('ejection for failures (ejection-review.ts, ejection-time.ts)', () => {
  /** Four backends; es[0] has failed `k` calls in a row at `t`, the others succeeded 100 each. */
  function broken(k: number, t = 0): PickEntry[] {
    const es = entries(4);
    for (let i = 0; i < 100; i++) for (const e of es.slice(1)) e.failures.record(false, t);
    for (let i = 0; i < k; i++) es[0].failures.record(true, t);
    return es;
  }

  it('ejects a backend failing far more than its peers once it has failed three calls, and gives it no call before its time out', () => {
    expect(reviewEjections(broken(2), 0, DEFAULT_TUNING).eject).toEqual([]);
    const es = broken(3);
    const r = reviewEjections(es, 0, DEFAULT_TUNING);
    expect(r.eject).toEqual([es[0]]);
    expect(r.cause.get(es[0])).toBe('failures');
    markEjected(es[0], 'failures', 0, DEFAULT_TUNING);
    expect(ejectionTimeMs(es[0], DEFAULT_TUNING)).toBe(250);
    const ctx = (now: number) => ({ now, neutralMs: 1, random: rng(), tuning: DEFAULT_TUNING });
    for (let now = 1; now < 250; now += 10) expect(choose(es.slice(1), [es[0]], ctx(now))).not.toBe(es[0]);
    expect(choose(es.slice(1), [es[0]], ctx(250))).toBe(es[0]); // the probe
  });

  it('a failed probe ejects it again for longer (250, 500, 750 ms ...); an OK probe lets it back, judged afresh; the multiplier decays one step per 5 s back', () => {
    const es = broken(3);
    const out = es[0];
    markEjected(out, 'failures', 0, DEFAULT_TUNING);
    let now = 0;
    const outFor: number[] = [];
    for (let k = 0; k < 3; k++) {
      const t0 = now;
      now = out.probeFrom;
      out.failures.record(true, now + 1); // the probe failed
      const r = reviewEjections(es, now + 2, DEFAULT_TUNING);
      expect(r.extend).toEqual([out]);
      markEjected(out, 'failures', now + 2, DEFAULT_TUNING);
      outFor.push(Math.round(now - t0));
      now += 2;
    }
    expect(outFor).toEqual([250, 500, 750]);
    expect(out.multiplier).toBe(4);
    // Healed: the next probe answers.
    now = out.probeFrom;
    out.failures.record(false, now + 1);
    const r = reviewEjections(es, now + 2, DEFAULT_TUNING);
    expect(r.readmit).toEqual([out]);
    markEjected(out, undefined, now + 2, DEFAULT_TUNING);
    // 11 s in the rotation: two steps off; broken again, it is out for (4 - 2 + 1) x 250 ms.
    markEjected(out, 'failures', now + 2 + 11_000, DEFAULT_TUNING);
    expect(ejectionTimeMs(out, DEFAULT_TUNING)).toBe(750);
  });

  it('a backend that breaks all at once, with a window full of earlier successes, is ejected after five failures in a row; at the peers\' own rate such a run must be rarer than one in a million', () => {
    const es = entries(4);
    for (let i = 0; i < 500; i++) for (const e of es) e.failures.record(false, i);
    for (let i = 0; i < 4; i++) es[0].failures.record(true, 500);
    expect(reviewEjections(es, 500, DEFAULT_TUNING).eject).toEqual([]);
    es[0].failures.record(true, 500);
    expect(failureExcess(es[0], 500, 0, DEFAULT_TUNING)).toBeLessThan(0.02); // its rate barely moved
    expect(reviewEjections(es, 500, DEFAULT_TUNING).eject).toEqual([es[0]]);
    expect([0, 0.01, 0.1, 0.2, 0.49, 0.5].map((r) => failureRunLimit(r, DEFAULT_TUNING))).toEqual([5, 5, 6, 9, 20, Infinity]);
    // Peers failing 10%: five in a row is not enough, six is.
    const flaky = entries(4);
    for (let i = 0; i < 500; i++) flaky.forEach((e) => e.failures.record(i % 10 === 0, i));
    for (let i = 0; i < 5; i++) flaky[0].failures.record(true, 500);
    expect(reviewEjections(flaky, 500, DEFAULT_TUNING).eject).toEqual([]);
    flaky[0].failures.record(true, 500);
    expect(reviewEjections(flaky, 500, DEFAULT_TUNING).eject).toEqual([flaky[0]]);
  });

  it('ejects at most max_ejection_percent of the backends (default: fewer than half), none when every backend fails alike', () => {
    const two = broken(50);
    for (let i = 0; i < 50; i++) two[1].failures.record(true, 0);
    // Two of four broken: one goes; the other keeps the floor factor.
    expect(reviewEjections(two, 0, DEFAULT_TUNING).eject).toHaveLength(1);
    expect(reviewEjections(two, 0, { ...DEFAULT_TUNING, maxEjectionPercent: 100 }).eject).toHaveLength(2);
    expect([2, 4, 10].map((n) => maxEjected(n, 25))).toEqual([1, 1, 2]);
    expect([2, 4, 10].map((n) => maxEjected(n, 100))).toEqual([1, 3, 9]);
    const all = entries(4);
    for (let i = 0; i < 100; i++) for (const e of all) e.failures.record(true, 0);
    expect(reviewEjections(all, 0, DEFAULT_TUNING).eject).toEqual([]);
  });
});

describe('whole runs on a fake clock (4 backends, concurrency 16, 2 ms calls)', () => {
  it('one backend failing every call: under 1% of calls fail (round robin: 25%), ejected within 0.1 s', () => {
    const la = run(4, 10, (i) => (i === 0 ? 1 : 0));
    const rr = run(4, 10, (i) => (i === 0 ? 1 : 0), 'round_robin');
    console.log(`[failure math] broken backend: load_aware ${pct(la.failed, la.calls).toFixed(3)}% failed of ${la.calls}, round_robin ${pct(rr.failed, rr.calls).toFixed(1)}%`);
    expect(pct(la.failed, la.calls)).toBeLessThan(1);
    expect(pct(rr.failed, rr.calls)).toBeCloseTo(25, 0);
    expect(la.perSecond[0][0]).toBeLessThan(50); // 0.1 s of its fair share would be ~200
  });

  it('one backend that breaks 3 s into the run: under 1% of the calls after that fail, its failures stop within 0.1 s', () => {
    const la = run(4, 8, (i, t) => (i === 0 && t >= 3_000 ? 1 : 0));
    const after = la.perSecond.slice(3).reduce((n, s) => n + s.reduce((a, b) => a + b, 0), 0);
    console.log(`[failure math] breaks at 3 s: ${la.failed} failed of ${after} calls after (${pct(la.failed, after).toFixed(3)}%); its calls per second ${la.perSecond.map((s) => s[0]).join(' ')}`);
    expect(pct(la.failed, after)).toBeLessThan(1);
    // ~2,000 calls a second are its share; 0.1 s of them would be 200.
    expect(la.perSecond[3][0]).toBeLessThan(200);
  });

  it('one backend failing 20%: at most half its fair share (round robin: all of it)', () => {
    const la = run(4, 10, (i) => (i === 0 ? 0.2 : 0));
    const rr = run(4, 10, (i) => (i === 0 ? 0.2 : 0), 'round_robin');
    const share = pct(la.received[0], la.calls);
    console.log(`[failure math] flaky 20%: its share load_aware ${share.toFixed(1)}% (${pct(la.failed, la.calls).toFixed(2)}% failed), round_robin ${pct(rr.received[0], rr.calls).toFixed(1)}% (${pct(rr.failed, rr.calls).toFixed(2)}%)`);
    expect(share).toBeLessThanOrEqual(12.5);
    expect(share).toBeGreaterThan(3); // less in proportion, not ejected
  });

  it('every backend failing 10%: 10% of calls fail, no ejection, shares stay even', () => {
    const la = run(4, 10, () => 0.1);
    console.log(`[failure math] all failing 10%: load_aware ${pct(la.failed, la.calls).toFixed(2)}% failed, ${la.ejections} ejections, shares ${la.received.map((r) => pct(r, la.calls).toFixed(1)).join('/')}`);
    expect(pct(la.failed, la.calls)).toBeCloseTo(10, 0);
    expect(la.ejections).toBe(0);
    for (const r of la.received) expect(Math.abs(pct(r, la.calls) - 25)).toBeLessThan(2);
  });

  it('a broken backend that heals after 10 s is back at its fair share within 10 s (here within 3)', () => {
    const la = run(4, 20, (i, t) => (i === 0 && t < 10_000 ? 1 : 0));
    const shares = la.perSecond.map((s) => pct(s[0], s.reduce((a, b) => a + b, 0)));
    const back = shares.findIndex((s, sec) => sec >= 10 && s >= 22);
    console.log(`[failure math] heals at 10 s: its share per second ${shares.map((s) => s.toFixed(0)).join(' ')} (back in second ${back})`);
    expect(back).toBeGreaterThanOrEqual(10);
    expect(back - 10).toBeLessThanOrEqual(3);
    for (const s of shares.slice(back)) expect(s).toBeGreaterThan(22);
  });
});
