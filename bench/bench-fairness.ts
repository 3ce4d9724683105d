import { createGreeterClient } from '../services/greeter-client';
import { runLoad } from '../services/load-generator';
import { maxMinRatio, round } from './bench-report';

export interface FairnessOptions {
  etcdTarget: string;
  addrs: string[];
  runMs: number;
  warmMs: number;
  concurrency: number;
  deadlineMs: number;
}

export interface FairnessResult {
  backends: number;
  /** max/min per-backend share through the resolver. */
  resolver: number;
  /** The same through a static target of the same servers (what round_robin alone gives). */
  static: number;
  resolverRps: number;
  staticRps: number;
  /** Per-backend share of the resolver run, percent. */
  sharesPct: Record<string, number>;
  failed: number;
}

/**
 * Per-backend share with N backends: a fresh resolver channel, warmed until
 * it has seen every backend, then one measured run; the same on a static
 * target of the same servers, side by side.
 */
export async function benchFairness(o: FairnessOptions, progress: (s: string) => void): Promise<FairnessResult> {
  const n = o.addrs.length;
  const measure = async (target: string) => {
    const client = createGreeterClient(target);
    try {
      // Warm until every backend answers (new servers are JIT-cold), and at least twice.
      for (let i = 0; i < 6; i++) {
        const w = await runLoad({ client, concurrency: o.concurrency, durationMs: o.warmMs, deadlineMs: o.deadlineMs });
        if (i >= 1 && Object.keys(w.backends).length >= n) break;
      }
      return await runLoad({ client, concurrency: o.concurrency, durationMs: o.runMs, deadlineMs: o.deadlineMs });
    } finally {
      client.close();
    }
  };
  const r = await measure(o.etcdTarget);
  progress(`  ${n} backends resolver: ${r.rps} rps, max/min ${round(maxMinRatio(r.backends, n), 4)}`);
  const s = await measure(`ipv4:${o.addrs.join(',')}`);
  progress(`  ${n} backends static:   ${s.rps} rps, max/min ${round(maxMinRatio(s.backends, n), 4)}`);
  const sharesPct: Record<string, number> = {};
  for (const [b, c] of Object.entries(r.backends).sort()) sharesPct[b] = round((100 * c) / Math.max(1, r.ok), 3);
  return {
    backends: n,
    resolver: round(maxMinRatio(r.backends, n), 4),
    static: round(maxMinRatio(s.backends, n), 4),
    resolverRps: r.rps,
    staticRps: s.rps,
    sharesPct,
    failed: r.failed + s.failed,
  };
}
