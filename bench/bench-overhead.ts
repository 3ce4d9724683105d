import { createGreeterClient } from '../services/greeter-client';
import { runLoad, type LoadReport } from '../services/load-generator';
import { maxMinRatio, median, round } from './bench-report';

export interface OverheadOptions {
  /** `etcd:///<prefix>/<service>`. */
  etcdTarget: string;
  /** The same backends, `host:port` each. */
  addrs: string[];
  pairs: number;
  runMs: number;
  /** Runs where both channels load the servers at the same time (concurrency/2 each). */
  simultaneousRuns: number;
  warmMs: number;
  concurrency: number;
  deadlineMs: number;
}

export interface RunSummary {
  mode: 'resolver' | 'static';
  rps: number;
  p50: number;
  p99: number;
  failed: number;
  maxMin: number;
}

export interface OverheadResult {
  runs: RunSummary[];
  /** Mean resolver rps / mean static rps over all pairs. */
  rpsRatio: number;
  /** Median over pairs of (resolver rps / static rps in that pair). */
  rpsRatioMedianPair: number;
  resolver: { rps: number; p50: number; p99: number };
  static: { rps: number; p50: number; p99: number };
  /** Median-over-runs p50/p99 of the resolver divided by the same of static. */
  p50Ratio: number;
  p99Ratio: number;
  /** Median over pairs of (resolver p99 / static p99 in that pair). */
  p99RatioMedianPair: number;
  /** max/min per-backend share over all resolver runs pooled (and static, for reference). */
  fairnessResolver: number;
  fairnessStatic: number;
  /**
   * Both channels at once, concurrency/2 each, same window: machine noise hits
   * both equally. Medians over the simultaneous runs.
   */
  simultaneous: { runs: number; rpsRatio: number; p50Ratio: number; p99Ratio: number };
  failed: number;
}

function summarize(mode: RunSummary['mode'], r: LoadReport, n: number): RunSummary {
  return { mode, rps: r.rps, p50: r.latencyMs.p50, p99: r.latencyMs.p99, failed: r.failed, maxMin: round(maxMinRatio(r.backends, n), 4) };
}

function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/**
 * Resolver overhead, latency and 3-backend fairness from one set of runs:
 * `pairs` pairs of closed-loop runs, one through `etcd:///...` and one
 * through a static `ipv4:` target naming the same servers, same concurrency,
 * same channel helper (createGreeterClient). The order alternates (ABBA...)
 * so drift on a noisy machine falls on both sides equally.
 */
export async function benchOverhead(o: OverheadOptions, progress: (s: string) => void): Promise<OverheadResult> {
  const staticTarget = `ipv4:${o.addrs.join(',')}`;
  const clients = {
    resolver: createGreeterClient(o.etcdTarget),
    static: createGreeterClient(staticTarget),
  };
  try {
    // Warm both channels, alternating, until each one's throughput has stopped
    // climbing (every subchannel connected, client and fresh servers JIT-warm):
    // a still-warming system would otherwise penalise whichever side runs first.
    const warm: Record<'resolver' | 'static', number[]> = { resolver: [], static: [] };
    const settled = (xs: number[]) => xs.length >= 2 && xs[xs.length - 1] <= 1.05 * xs[xs.length - 2];
    for (let i = 0; i < 12 && !(i >= 6 && settled(warm.resolver) && settled(warm.static)); i++) {
      const mode = i % 2 === 0 ? 'resolver' : 'static';
      const w = await runLoad({ client: clients[mode], concurrency: o.concurrency, durationMs: o.warmMs, deadlineMs: o.deadlineMs });
      warm[mode].push(w.rps);
      progress(`  warm-up ${mode.padEnd(8)} ${w.rps} rps, ${Object.keys(w.backends).length} backends`);
    }
    const runs: RunSummary[] = [];
    const pooled = { resolver: {} as Record<string, number>, static: {} as Record<string, number> };
    const pairRps: number[] = [];
    const pairP99: number[] = [];
    let failedSim = 0;
    for (let i = 0; i < o.pairs; i++) {
      const order = i % 2 === 0 ? (['resolver', 'static'] as const) : (['static', 'resolver'] as const);
      const got: Partial<Record<'resolver' | 'static', RunSummary>> = {};
      for (const mode of order) {
        const r = await runLoad({ client: clients[mode], concurrency: o.concurrency, durationMs: o.runMs, deadlineMs: o.deadlineMs });
        addCounts(pooled[mode], r.backends);
        const s = summarize(mode, r, o.addrs.length);
        runs.push(s);
        got[mode] = s;
        progress(`  pair ${i + 1}/${o.pairs} ${mode.padEnd(8)} ${s.rps} rps  p50 ${s.p50} ms  p99 ${s.p99} ms  max/min ${s.maxMin}  failed ${s.failed}`);
      }
      pairRps.push(got.resolver!.rps / got.static!.rps);
      pairP99.push(got.resolver!.p99 / got.static!.p99);
    }
    const sim = { rps: [] as number[], p50: [] as number[], p99: [] as number[] };
    for (let i = 0; i < o.simultaneousRuns; i++) {
      const half = Math.max(1, o.concurrency >> 1);
      const [r, s] = await Promise.all(
        (['resolver', 'static'] as const).map((mode) => runLoad({ client: clients[mode], concurrency: half, durationMs: o.runMs, deadlineMs: o.deadlineMs })),
      );
      sim.rps.push(r.rps / s.rps);
      sim.p50.push(r.latencyMs.p50 / s.latencyMs.p50);
      sim.p99.push(r.latencyMs.p99 / s.latencyMs.p99);
      failedSim += r.failed + s.failed;
      progress(`  simultaneous ${i + 1}/${o.simultaneousRuns}: resolver ${r.rps} rps p99 ${r.latencyMs.p99} ms | static ${s.rps} rps p99 ${s.latencyMs.p99} ms`);
    }
    const of = (mode: RunSummary['mode']) => runs.filter((r) => r.mode === mode);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const agg = (mode: RunSummary['mode']) => ({
      rps: round(mean(of(mode).map((r) => r.rps)), 1),
      p50: round(median(of(mode).map((r) => r.p50)), 3),
      p99: round(median(of(mode).map((r) => r.p99)), 3),
    });
    const res = agg('resolver');
    const sta = agg('static');
    return {
      runs,
      rpsRatio: round(res.rps / sta.rps, 4),
      rpsRatioMedianPair: round(median(pairRps), 4),
      resolver: res,
      static: sta,
      p50Ratio: round(res.p50 / sta.p50, 4),
      p99Ratio: round(res.p99 / sta.p99, 4),
      p99RatioMedianPair: round(median(pairP99), 4),
      fairnessResolver: round(maxMinRatio(pooled.resolver, o.addrs.length), 4),
      fairnessStatic: round(maxMinRatio(pooled.static, o.addrs.length), 4),
      simultaneous: { runs: o.simultaneousRuns, rpsRatio: round(median(sim.rps), 4), p50Ratio: round(median(sim.p50), 4), p99Ratio: round(median(sim.p99), 4) },
      failed: runs.reduce((a, r) => a + r.failed, 0) + failedSim,
    };
  } finally {
    clients.resolver.close();
    clients.static.close();
  }
}
