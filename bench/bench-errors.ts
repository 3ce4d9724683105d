import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { createGreeterClient } from '../services/greeter-client';
import { runLoad, type LoadReport, type LoadTick } from '../services/load-generator';
import { encodeEndpoint, endpointKey } from '../balancer/endpoint-codec';
import { freePort } from '../demo/free-port';
import { MeshProcess } from '../demo/mesh-process';
import { sleep, startServers, stopServers, type BenchServer } from './bench-processes';
import { round, type Report } from './bench-report';
import type { LbPolicy } from '../balancer/channel';

/**
 * Issue 21 items 1-2: how failures steer picks, load_aware beside
 * round_robin and grpc-js's outlier_detection (around round_robin, see
 * balancer/lb-policy-config.ts), each on a fresh channel of the same
 * helper, on the same processes: three mesh servers and a gRPC C-core
 * greeter (test/peers/greeter_server.py, python3-grpcio) that fails calls,
 * registered under a lease of the bench's own.
 * - broken: a second into the load (every backend connected and warm) the
 *   peer starts answering INTERNAL to every call (SIGUSR2) for one run, then
 *   heals (SIGUSR1) for another: the failed share while broken, and how long
 *   after healing its per-second share is back near its fair 25%.
 * - flaky: it fails 20% of its calls: its share of the calls, and the
 *   failed share.
 * - all: four such peers each failing 10%: the failed share (their own
 *   rate when nothing amplifies it), and calls answered per request.
 * Shares count what a backend answered, OK or failed: only the peers fail,
 * and INTERNAL is never retried, so the INTERNAL count is theirs.
 */
export const ERROR_POLICIES = ['load_aware', 'round_robin', 'outlier_detection'] as const satisfies readonly LbPolicy[];
type Policy = (typeof ERROR_POLICIES)[number];

export interface ErrorsOptions {
  etcd: string;
  writer: Etcd3;
  prefix: string;
  service: string;
  /** Each run (and each half of the broken-then-healed run), ms: 10 s full, shorter quick. */
  runMs: number;
  concurrency: number;
}

export interface BrokenResult {
  policy: Policy;
  /** While broken: calls completed, failed share (%), and failures in its first second. */
  requests: number;
  failedPct: number;
  firstSecondFailed: number;
  rps: number;
  /** After healing: its share per second (%), and when it was first back at >= 20% (s after healing; null: never). */
  healedShares: number[];
  backAfterS: number | null;
}

export interface FlakyResult {
  policy: Policy;
  requests: number;
  failedPct: number;
  /** Share of the calls the 20%-failing peer answered (%; fair: 25). */
  peerSharePct: number;
}

export interface AllResult {
  policy: Policy;
  requests: number;
  failedPct: number;
  /** Calls the four peers answered per request made (1: nothing amplified). */
  answeredPerRequest: number;
  /** Highest / lowest share among the four. */
  maxMinShare: number;
}

export interface ErrorsResult {
  broken: BrokenResult[];
  flaky: FlakyResult[];
  all: AllResult[];
}

const PYTHON = '/usr/bin/python3';
const PEER = path.join(path.extname(__filename) === '.ts' ? path.resolve(__dirname, '..') : path.resolve(__dirname, '..', '..'), 'test', 'peers', 'greeter_server.py');

/** Why the C-core peer cannot run here, or undefined when it can. */
export function errorsUnavailable(): string | undefined {
  if (spawnSync(PYTHON, ['-c', 'import grpc'], { stdio: 'ignore' }).status !== 0) return `${PYTHON} cannot import grpc (python3-grpcio)`;
  return undefined;
}

/** A failing C-core greeter, registered under `lease`. */
class FailingPeer {
  private constructor(
    readonly proc: MeshProcess,
    readonly addr: string,
  ) {}

  static async start(code: string, fraction: number): Promise<FailingPeer> {
    const port = await freePort();
    const proc = new MeshProcess(['-u', PEER, String(port), '--fail-code', code, '--fail-fraction', String(fraction)], {}, { command: PYTHON, logsFrom: 'stdout' });
    await proc.waitForLogLine((l) => l.event === 'listening', 15_000, `C-core peer :${port}`);
    return new FailingPeer(proc, `127.0.0.1:${port}`);
  }

  /** Calls it has answered, as of its last once-a-second report. */
  get answered(): number {
    return Number([...this.proc.logs].reverse().find((l) => l.event === 'calls')?.calls ?? 0);
  }

  heal(): void {
    this.proc.kill('SIGUSR1');
  }

  break(): void {
    this.proc.kill('SIGUSR2');
  }
}

/** One load on a fresh channel with policy `lb`; each `at` runs its action that many ms into it. */
async function run(target: string, lb: Policy, o: ErrorsOptions, durationMs: number, at: { ms: number; action: () => void }[] = []): Promise<{ report: LoadReport; ticks: LoadTick[] }> {
  const client = createGreeterClient(target, undefined, { lb });
  const ticks: LoadTick[] = [];
  const timers = at.map((a) => setTimeout(a.action, a.ms));
  try {
    const report = await runLoad({ client, concurrency: o.concurrency, durationMs, deadlineMs: 1_000, onTick: (t) => ticks.push(t) });
    return { report, ticks };
  } finally {
    for (const t of timers) clearTimeout(t);
    client.close();
  }
}

/** A second of load before the peer breaks: connections up, processes warm. */
const WARM_MS = 1_000;

const pct = (x: number, of: number) => round((100 * x) / Math.max(1, of), 2);
const answeredBy = (r: LoadReport, addr: string) => (r.backends[addr] ?? 0) + (r.errors.INTERNAL ?? 0);

export async function benchErrors(o: ErrorsOptions, progress: (s: string) => void): Promise<ErrorsResult> {
  const lease = o.writer.lease(30);
  await lease.grant();
  const register = (prefix: string, addr: string) => lease.put(endpointKey(prefix, o.service, addr)).value(encodeEndpoint(addr)).exec();
  const peers: FailingPeer[] = [];
  let servers: BenchServer[] = [];
  try {
    // One peer failing every call among three mesh servers: broken for runMs, then healed for runMs.
    const brokenPrefix = `${o.prefix}b`;
    servers = await startServers(3, { etcd: o.etcd, prefix: brokenPrefix, service: o.service, register: true });
    const broken = await FailingPeer.start('INTERNAL', 1);
    peers.push(broken);
    broken.heal();
    await register(brokenPrefix, broken.addr);
    const brokenResults: BrokenResult[] = [];
    for (const lb of ERROR_POLICIES) {
      const { report, ticks } = await run(`etcd:///${brokenPrefix}/${o.service}`, lb, o, WARM_MS + 2 * o.runMs, [
        { ms: WARM_MS, action: () => broken.break() },
        { ms: WARM_MS + o.runMs, action: () => broken.heal() },
      ]);
      // Tick k covers [k-1, k) s of the run.
      const brokeS = WARM_MS / 1000;
      const healedAtS = brokeS + o.runMs / 1000;
      const during = ticks.filter((t) => t.second > brokeS && t.second <= healedAtS);
      const after = ticks.filter((t) => t.second > healedAtS);
      const requests = during.reduce((n, t) => n + t.ok + t.failed, 0);
      const failed = during.reduce((n, t) => n + t.failed, 0);
      const healedShares = after.map((t) => pct(t.backends[broken.addr] ?? 0, t.ok + t.failed));
      const back = healedShares.findIndex((s) => s >= 20);
      const r: BrokenResult = { policy: lb, requests, failedPct: pct(failed, requests), firstSecondFailed: during[0]?.failed ?? 0, rps: round(requests / (o.runMs / 1000), 1), healedShares, backAfterS: back < 0 ? null : back + 1 };
      brokenResults.push(r);
      progress(`  broken backend, ${lb}: ${r.failedPct}% of ${r.requests} calls failed while broken (${r.firstSecondFailed} in its first second); healed: its share per second ${healedShares.join(' ')}% -> back within ${r.backAfterS ?? 'never'} s; the whole run failed ${report.failed}`);
      await sleep(200);
    }

    // The same peer failing 20% of its calls.
    const flakyPrefix = `${o.prefix}f`;
    await o.writer.delete().key(endpointKey(brokenPrefix, o.service, broken.addr)).exec();
    await stopServers(servers);
    servers = await startServers(3, { etcd: o.etcd, prefix: flakyPrefix, service: o.service, register: true });
    const flaky = await FailingPeer.start('INTERNAL', 0.2);
    peers.push(flaky);
    await register(flakyPrefix, flaky.addr);
    const flakyResults: FlakyResult[] = [];
    for (const lb of ERROR_POLICIES) {
      const { report } = await run(`etcd:///${flakyPrefix}/${o.service}`, lb, o, o.runMs);
      const r: FlakyResult = { policy: lb, requests: report.requests, failedPct: pct(report.failed, report.requests), peerSharePct: pct(answeredBy(report, flaky.addr), report.requests) };
      flakyResults.push(r);
      progress(`  flaky backend (20%), ${lb}: its share ${r.peerSharePct}% (fair 25%), ${r.failedPct}% of ${r.requests} calls failed`);
    }
    await stopServers(servers);
    servers = [];

    // Four peers, each failing 10%.
    const allPrefix = `${o.prefix}a`;
    const four = await Promise.all([0, 1, 2, 3].map(() => FailingPeer.start('INTERNAL', 0.1)));
    peers.push(...four);
    await Promise.all(four.map((p) => register(allPrefix, p.addr)));
    const allResults: AllResult[] = [];
    for (const lb of ERROR_POLICIES) {
      const before = four.reduce((n, p) => n + p.answered, 0);
      const { report } = await run(`etcd:///${allPrefix}/${o.service}`, lb, o, o.runMs);
      // The peers report their counts once a second.
      await sleep(1_300);
      const answered = four.reduce((n, p) => n + p.answered, 0) - before;
      const shares = four.map((p) => (report.backends[p.addr] ?? 0) / Math.max(1, report.ok));
      const r: AllResult = { policy: lb, requests: report.requests, failedPct: pct(report.failed, report.requests), answeredPerRequest: round(answered / Math.max(1, report.requests), 3), maxMinShare: round(Math.max(...shares) / Math.max(1e-9, Math.min(...shares)), 3) };
      allResults.push(r);
      progress(`  every backend failing 10%, ${lb}: ${r.failedPct}% of ${r.requests} calls failed, ${r.answeredPerRequest} answers per request, shares max/min ${r.maxMinShare}`);
    }
    return { broken: brokenResults, flaky: flakyResults, all: allResults };
  } finally {
    await lease.revoke().catch(() => undefined);
    await stopServers(servers);
    await Promise.all(peers.map((p) => p.proc.stop()));
  }
}

/** The stage's rows in the bench's table. */
export function reportErrors(report: Report, r: ErrorsResult, runS: number): void {
  const by = <T extends { policy: Policy }>(xs: T[], f: (x: T) => string) => ERROR_POLICIES.map((p) => `${p} ${f(xs.find((x) => x.policy === p)!)}`).join(' | ');
  const la = <T extends { policy: Policy }>(xs: T[]) => xs.find((x) => x.policy === 'load_aware')!;
  report.row('errors', `1 of 4 answering INTERNAL, ${runS} s at concurrency 16: failed calls`, by(r.broken, (x) => `${x.failedPct}%`), 'load_aware <= 1% (round_robin ~25%)', la(r.broken).failedPct <= 1);
  report.row('errors', '  broken backend healed: back at >= 20% share (per-second) after', by(r.broken, (x) => (x.backAfterS === null ? 'never' : `${x.backAfterS} s`)), 'load_aware <= 10 s', la(r.broken).backAfterS !== null && la(r.broken).backAfterS! <= 10);
  report.row('errors', '1 of 4 failing 20%: its share of the calls (fair 25%)', by(r.flaky, (x) => `${x.peerSharePct}%`), 'load_aware <= 12.5%', la(r.flaky).peerSharePct <= 12.5);
  report.row('errors', '  flaky backend: failed calls', by(r.flaky, (x) => `${x.failedPct}%`));
  report.row('errors', 'all 4 failing 10%: failed calls', by(r.all, (x) => `${x.failedPct}%`), 'load_aware 10% +- 1', Math.abs(la(r.all).failedPct - 10) <= 1);
  report.row('errors', '  all failing: calls answered per request | shares max/min', by(r.all, (x) => `${x.answeredPerRequest} | ${x.maxMinShare}`), 'load_aware <= 1.02', la(r.all).answeredPerRequest <= 1.02);
}
