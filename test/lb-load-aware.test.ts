import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { dutyCycle } from '../demo/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';
import { createGreeterClient, sayHello, backendOf } from '../services/greeter-client';
import { encodeEndpoint } from '../balancer/endpoint-codec';
import type { LoadReport } from '../services/load-generator';

/**
 * The load-aware policy (the default) against real greeter processes and a
 * real etcd: a slow backend (duty-cycled with SIGSTOP/SIGCONT, alive but
 * late), weights from the registry (flags and hand-written), and the retry
 * budget in a brownout, counted by the servers themselves. Timing figures
 * are printed; the assertions are generous bounds (the bench measures).
 */

let t: Partial<TestEtcd> = {};
const stoppers: (() => void)[] = [];

beforeAll(async () => {
  t = await startTestEtcd(1);
  registerEtcdResolver(t.client!, 'lb-test');
});

afterAll(async () => {
  for (const stop of stoppers) stop();
  unregisterEtcdClient('lb-test');
  await stopTestEtcd(t);
});

interface Server {
  proc: MeshProcess;
  addr: string;
  key: string;
}

async function startServer(prefix: string, extra: string[] = []): Promise<Server> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--ttl', '10', ...extra]);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return { proc, addr: `127.0.0.1:${port}`, key: `${prefix}/greeter/127.0.0.1:${port}` };
}

/** A slow backend (demo/mesh-process dutyCycle), stopped for sure in afterAll. */
function slowDown(s: Server): () => void {
  const stop = dutyCycle(s.proc.proc);
  stoppers.push(stop);
  return stop;
}

async function load(prefix: string, args: string[]): Promise<{ report: LoadReport; proc: MeshProcess }> {
  const proc = new MeshProcess(['load', '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--json', ...args]);
  const { code } = await proc.exited;
  if (code !== 0) throw new Error(`mesh load exited ${code}: ${proc.stderr.slice(-5).join('\n')}`);
  return { report: JSON.parse(proc.stdout[proc.stdout.length - 1]) as LoadReport, proc };
}

/** SIGTERM the servers; each logs how many calls it served when it stops. */
async function servedCounts(servers: Server[]): Promise<number[]> {
  for (const s of servers) s.proc.kill('SIGTERM');
  return Promise.all(servers.map(async (s) => (await s.proc.waitForLog('server.state', { to: 'STOPPED' }, 20_000)).served as number));
}

const share = (r: LoadReport, addr: string) => (r.backends[addr] ?? 0) / Math.max(1, r.ok);

describe('load-aware balancing (default policy)', () => {
  it('a slow backend (SIGSTOP 40 ms / SIGCONT 10 ms) gets at most 10% of the calls at concurrency 16; 0 failed', async () => {
    const servers = await Promise.all([startServer('slow'), startServer('slow'), startServer('slow')]);
    const stop = slowDown(servers[0]);
    const { report, proc } = await load('slow', ['--concurrency', '16', '--duration', '5s']);
    stop();
    const ejected = proc.logs.some((l) => l.event === 'lb.endpoint_state' && l.addr === servers[0].addr && l.to === 'EJECTED');
    console.log(`[lb slow] share of the slow backend ${(100 * share(report, servers[0].addr)).toFixed(2)}%; ok=${report.ok} failed=${report.failed} rps=${report.rps} p50=${report.latencyMs.p50} p99=${report.latencyMs.p99} ms; ejected=${ejected}`);
    expect(report.failed).toBe(0);
    expect(share(report, servers[0].addr)).toBeLessThanOrEqual(0.1);
    expect(ejected).toBe(true);
    await servedCounts(servers);
  });

  it('weights 90/10 (--weight): shares within 2 points over 10,000 calls; a weight rewritten by hand takes effect in well under a second', async () => {
    const [heavy, light] = await Promise.all([startServer('w', ['--weight', '90']), startServer('w', ['--weight', '10'])]);
    const greeter = createGreeterClient('etcd:///w/greeter', undefined, {}, { 'etcd_mesh.client': 'lb-test' });
    await waitFor('both backends answer', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 40; i++) seen.add(backendOf(await sayHello(greeter, 'warm', 2000)));
      return seen.size === 2;
    }, 20_000);
    const counts: Record<string, number> = {};
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < 10_000) {
          next++;
          const b = backendOf(await sayHello(greeter, 'w', 2000));
          counts[b] = (counts[b] ?? 0) + 1;
        }
      }),
    );
    greeter.close();
    const lightShare = (counts[light.addr] ?? 0) / 10_000;
    console.log(`[lb weights] 90/10 over 10,000 calls: ${(100 * (1 - lightShare)).toFixed(2)}/${(100 * lightShare).toFixed(2)}`);
    expect(lightShare).toBeGreaterThanOrEqual(0.08);
    expect(lightShare).toBeLessThanOrEqual(0.12);

    // Rewrite the light backend's weight by hand (under its own lease, as an operator would with etcdctl put --lease)
    // while `mesh load` runs; the balancer logs each change it applies.
    const lease = (await t.client!.get(light.key).exec()).kvs[0].lease;
    const loadProc = new MeshProcess(['load', '--etcd', t.etcd!.endpoints, '--prefix', 'w', '--json', '--concurrency', '4', '--duration', '3s']);
    await loadProc.waitForLog('lb.endpoint_state', { addr: light.addr, to: 'ACTIVE' });
    const lags: number[] = [];
    for (let i = 0; i < 10; i++) {
      const weight = i % 2 === 0 ? 50 : 10;
      const value = encodeEndpoint(light.addr, { weight, note: `rewrite ${i}` });
      await t.etcd!.etcdctl(['put', `--lease=${BigInt(lease).toString(16)}`, light.key, value]);
      const done = Date.now();
      const applied = await loadProc.waitForLog('lb.weight', { addr: light.addr, to: weight }, 5_000).catch(() => undefined);
      // The log line may have come before etcdctl exited: lag is from etcdctl's exit, floored at 0.
      if (applied) lags.push(Math.max(0, (applied.time as number) - done));
      // Each rewrite's own log line: drop earlier matches so the next wait sees only the next change.
      loadProc.logs.splice(0, loadProc.logs.length);
    }
    const { code } = await loadProc.exited;
    expect(code).toBe(0);
    lags.sort((a, b) => a - b);
    console.log(`[lb weights] weight rewrite applied ${lags.length}/10 times; lag after etcdctl exit: max ${lags[lags.length - 1]} ms, median ${lags[lags.length >> 1]} ms`);
    expect(lags).toHaveLength(10);
    expect(lags[lags.length - 1]).toBeLessThan(1000);
    await servedCounts([heavy, light]);
  });

  it('a bad weight written by hand: a warning naming the key, once per change of the record, the default weight used; the backend keeps serving', async () => {
    const s = await startServer('bw', ['--no-register']);
    const key = `bw/greeter/${s.addr}`;
    const bad = JSON.stringify({ Op: 0, Addr: s.addr, Metadata: JSON.stringify({ weight: 5000 }) });
    await t.etcd!.etcdctl(['put', key, bad]);
    const loading = load('bw', ['--concurrency', '2', '--duration', '2s']);
    await new Promise((r) => setTimeout(r, 1200));
    // The same value written again (as a registration re-granting its lease would): no second warning.
    await t.etcd!.etcdctl(['put', key, bad]);
    const { report, proc } = await loading;
    const warnings = proc.logs.filter((l) => l.event === 'watcher.bad_metadata');
    expect(warnings).toHaveLength(1);
    const warning = warnings[0];
    expect(warning).toMatchObject({ key });
    expect(String(warning.reason)).toMatch(/weight 5000 is out of range 0\.\.1000; using the default weight 100/);
    expect(proc.logs.find((l) => l.event === 'lb.endpoint_state' && l.addr === s.addr)).toMatchObject({ weight: 100 });
    expect(report.failed).toBe(0);
    expect(report.ok).toBeGreaterThan(0);
    await t.etcd!.etcdctl(['del', key]);
    s.proc.kill('SIGTERM');
    await s.proc.exited;
  });

  it('brownout (every backend duty-cycled): attempts per successful call, counted by the servers, at most 1.2; 0 failed', async () => {
    const servers = await Promise.all([startServer('brown'), startServer('brown'), startServer('brown')]);
    const stops = servers.map((s) => slowDown(s));
    const { report } = await load('brown', ['--concurrency', '16', '--duration', '3s']);
    for (const stop of stops) stop();
    const served = await servedCounts(servers);
    const attempts = served.reduce((a, b) => a + b, 0);
    console.log(`[lb brownout] attempts ${attempts} for ${report.ok} ok calls: ${(attempts / report.ok).toFixed(3)} per call; failed=${report.failed} p99=${report.latencyMs.p99} ms`);
    expect(report.failed).toBe(0);
    expect(attempts / report.ok).toBeLessThanOrEqual(1.2);
  });

  it('--lb: unknown names and bad --weight values exit 2 with one line', async () => {
    const [lb, ...weights] = await Promise.all([
      runMesh(['load', '--lb', 'fastest', '--etcd', t.etcd!.endpoints]),
      ...['-1', 'heavy', '1001'].map((w) => runMesh(['server', '--port', '0', '--weight', w, '--etcd', t.etcd!.endpoints])),
    ]);
    expect(lb.code).toBe(2);
    expect(lb.stderr.filter(Boolean)).toHaveLength(1);
    expect(lb.stderr[0]).toMatch(/unknown policy "fastest"; choose one of load_aware, round_robin, pick_first, outlier_detection/);
    for (const r of weights) {
      expect(r.code).toBe(2);
      expect(r.stderr.filter(Boolean)).toHaveLength(1);
      expect(r.stderr[0]).toMatch(/--weight .*(out of range 0\.\.1000|is not an integer)/);
    }
  });
});
