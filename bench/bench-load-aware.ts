import type { Etcd3 } from 'etcd3';
import { createGreeterClient } from '../services/greeter-client';
import { runLoad, type LoadReport } from '../services/load-generator';
import { encodeEndpoint, endpointKey } from '../balancer/endpoint-codec';
import { sleep, startServers, stopServers, type BenchServer } from './bench-processes';
import { dutyCycle } from '../demo/mesh-process';
import { maxMinRatio, median, round } from './bench-report';

/**
 * The load-aware policy side by side with round_robin, in one run, on the
 * same servers and the same channel helper (only `lb` differs): equal
 * backends, one slow backend, weights, and a brownout of every backend.
 * "Slow" is a real process duty-cycled with signals: SIGSTOP 40 ms, SIGCONT
 * 10 ms, so it stays alive and answers late.
 */
export const POLICIES = ['load_aware', 'round_robin'] as const;
type Policy = (typeof POLICIES)[number];

export interface LoadAwareOptions {
  etcd: string;
  writer: Etcd3;
  prefix: string;
  service: string;
  runMs: number;
  warmMs: number;
  /** Alternating runs per policy in the equal-backends stage. */
  equalRuns: number;
  concurrency: number;
}

export interface EqualResult {
  /** Per policy: max/min share (worst run) and mean rps over its runs. */
  maxMin: Record<Policy, number>;
  rps: Record<Policy, number>;
  /** load_aware rps / round_robin rps: the median of the per-pair ratios (runs i of each policy, back to back). */
  rpsRatio: number;
  failed: number;
}

export interface SlowResult {
  policy: Policy;
  slowSharePct: number;
  healthyP99: number;
  slowP99: number;
  p99Ratio: number;
  healthyRps: number;
  slowRps: number;
  rpsRatio: number;
  failed: number;
}

export interface WeightsResult {
  policy: Policy;
  /** Share of the weight-10 backend, percent (90/10 asked). */
  lightSharePct: number;
  calls: number;
  failed: number;
}

export interface BrownoutResult {
  policy: Policy;
  /** Attempts the servers received per successful call. */
  attemptsPerOk: number;
  ok: number;
  failed: number;
  p99: number;
}

export interface LoadAwareResult {
  equal: EqualResult;
  slow: SlowResult[];
  weights: WeightsResult[];
  brownout: BrownoutResult[];
}

async function run(target: string, lb: Policy, o: LoadAwareOptions, runMs = o.runMs): Promise<LoadReport> {
  const client = createGreeterClient(target, undefined, { lb });
  try {
    await runLoad({ client, concurrency: o.concurrency, durationMs: o.warmMs, deadlineMs: 1_000 });
    return await runLoad({ client, concurrency: o.concurrency, durationMs: runMs, deadlineMs: 1_000 });
  } finally {
    client.close();
  }
}

/** Calls each server has served so far (from its STOPPED log line): stops them. */
async function servedAndStop(servers: BenchServer[]): Promise<number> {
  await stopServers(servers);
  return servers.map((s) => Number(s.mesh.logs.find((l) => l.event === 'server.state' && l.to === 'STOPPED')?.served ?? NaN)).reduce((a, b) => a + b, 0);
}

export async function benchLoadAware(o: LoadAwareOptions, progress: (s: string) => void): Promise<LoadAwareResult> {
  const opts = { etcd: o.etcd, prefix: o.prefix, service: o.service, register: true };
  const target = `etcd:///${o.prefix}/${o.service}`;

  // Equal backends: alternating runs, ABBA..., on the same three servers.
  // Freshly started servers (and this process's JIT) run at half speed for
  // their first few thousand calls; whichever policy ran first used to pay
  // for it (load_aware measured 0.79-0.85x round_robin that way, and 1.0x
  // warm). So both policies warm the servers first, unmeasured, and the
  // ratio is the median of the per-pair ratios, as the overhead stage does.
  let servers = await startServers(3, opts);
  for (const lb of POLICIES) await run(target, lb, o, Math.max(o.warmMs, 2_000));
  const equalRuns: Record<Policy, LoadReport[]> = { load_aware: [], round_robin: [] };
  const pairRatios: number[] = [];
  for (let i = 0; i < o.equalRuns; i++) {
    for (const lb of i % 2 === 0 ? POLICIES : [...POLICIES].reverse()) equalRuns[lb].push(await run(target, lb, o));
    pairRatios.push(equalRuns.load_aware[i].rps / equalRuns.round_robin[i].rps);
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const equal: EqualResult = {
    maxMin: {
      load_aware: round(Math.max(...equalRuns.load_aware.map((r) => maxMinRatio(r.backends, 3))), 4),
      round_robin: round(Math.max(...equalRuns.round_robin.map((r) => maxMinRatio(r.backends, 3))), 4),
    },
    rps: { load_aware: round(mean(equalRuns.load_aware.map((r) => r.rps)), 1), round_robin: round(mean(equalRuns.round_robin.map((r) => r.rps)), 1) },
    rpsRatio: 0,
    failed: [...equalRuns.load_aware, ...equalRuns.round_robin].reduce((a, r) => a + r.failed, 0),
  };
  equal.rpsRatio = round(median(pairRatios), 3);
  progress(`  equal backends: max/min load_aware ${equal.maxMin.load_aware}, round_robin ${equal.maxMin.round_robin}; rps ratio ${equal.rpsRatio}`);

  // One slow backend: each policy's healthy run, then its run with servers[0] duty-cycled.
  const slow: SlowResult[] = [];
  for (const lb of POLICIES) {
    const healthy = await run(target, lb, o);
    const stop = dutyCycle(servers[0].mesh.proc);
    const r = await run(target, lb, o);
    stop();
    const res: SlowResult = {
      policy: lb,
      slowSharePct: round((100 * (r.backends[servers[0].addr] ?? 0)) / Math.max(1, r.ok), 2),
      healthyP99: healthy.latencyMs.p99,
      slowP99: r.latencyMs.p99,
      p99Ratio: round(r.latencyMs.p99 / healthy.latencyMs.p99, 3),
      healthyRps: healthy.rps,
      slowRps: r.rps,
      rpsRatio: round(r.rps / healthy.rps, 3),
      failed: r.failed,
    };
    slow.push(res);
    progress(`  slow backend, ${lb}: share ${res.slowSharePct}%, p99 ${res.slowP99} vs ${res.healthyP99} ms (x${res.p99Ratio}), rps x${res.rpsRatio}, failed ${res.failed}`);
    await sleep(200);
  }
  await stopServers(servers);

  // Weights 90/10, written by hand into the registry (as an operator would with etcdctl).
  const pair = await startServers(2, { ...opts, register: false });
  const lease = o.writer.lease(30);
  await lease.grant();
  const weightsPrefix = `${o.prefix}w`;
  await Promise.all(pair.map((s, i) => lease.put(endpointKey(weightsPrefix, o.service, s.addr)).value(encodeEndpoint(s.addr, { weight: i === 0 ? 90 : 10 })).exec()));
  const weights: WeightsResult[] = [];
  for (const lb of POLICIES) {
    const r = await run(`etcd:///${weightsPrefix}/${o.service}`, lb, o);
    const w: WeightsResult = { policy: lb, lightSharePct: round((100 * (r.backends[pair[1].addr] ?? 0)) / Math.max(1, r.ok), 2), calls: r.ok, failed: r.failed };
    weights.push(w);
    progress(`  weights 90/10, ${lb}: light backend ${w.lightSharePct}% of ${w.calls} calls`);
  }
  await lease.revoke().catch(() => undefined);
  await stopServers(pair);

  // Brownout: every backend duty-cycled; attempts counted by the servers (fresh servers per policy).
  const brownout: BrownoutResult[] = [];
  for (const lb of POLICIES) {
    servers = await startServers(3, opts);
    const stops = servers.map((s) => dutyCycle(s.mesh.proc));
    const client = createGreeterClient(target, undefined, { lb });
    const r = await runLoad({ client, concurrency: o.concurrency, durationMs: o.runMs, deadlineMs: 1_000 });
    client.close();
    for (const stop of stops) stop();
    const attempts = await servedAndStop(servers);
    const b: BrownoutResult = { policy: lb, attemptsPerOk: round(attempts / Math.max(1, r.ok), 3), ok: r.ok, failed: r.failed, p99: r.latencyMs.p99 };
    brownout.push(b);
    progress(`  brownout, ${lb}: ${b.attemptsPerOk} attempts per ok call, ${b.ok} ok, ${b.failed} failed, p99 ${b.p99} ms`);
  }
  return { equal, slow, weights, brownout };
}
