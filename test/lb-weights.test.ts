import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess } from './harness/mesh-process';
import { freePort } from './harness/ports';
import { encodeEndpoint } from '../balancer/endpoint-codec';
import type { LoadReport } from '../services/load-generator';

/**
 * Issue 21 item 6, measured from outside (the shares `mesh load` reports,
 * which count the replies, each naming the server that sent it): weights
 * over their whole range, busy (8 calls in flight) and nearly idle (an open
 * loop at 500 calls/s), and weight 0 written into the registry as a drain.
 */

let t: Partial<TestEtcd> = {};
const tmp = mkdtempSync(path.join(tmpdir(), 'lb-weights-'));

beforeAll(async () => {
  t = await startTestEtcd(1);
});

afterAll(async () => {
  await stopTestEtcd(t, () => MeshProcess.killAll());
  rmSync(tmp, { recursive: true, force: true });
});

interface Server {
  proc: MeshProcess;
  addr: string;
  key: string;
}

async function startServer(prefix: string, weight: number): Promise<Server> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--ttl', '10', '--weight', String(weight)]);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return { proc, addr: `127.0.0.1:${port}`, key: `${prefix}/greeter/127.0.0.1:${port}` };
}

function startLoad(prefix: string, args: string[]): { proc: MeshProcess; report: Promise<LoadReport> } {
  // Half a second of warm-up: until every backend is connected, the first one READY takes every call.
  const proc = new MeshProcess(['load', '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--json', '--warmup', '500ms', ...args]);
  const report = proc.exited.then(({ code }) => {
    if (code !== 0) throw new Error(`mesh load exited ${code}: ${proc.stderr.slice(-5).join('\n')}`);
    return JSON.parse(proc.stdout[proc.stdout.length - 1]) as LoadReport;
  });
  return { proc, report };
}

const sharePct = (r: LoadReport, addr: string) => (100 * (r.backends[addr] ?? 0)) / Math.max(1, r.ok);
const MODES = [
  ['8 in flight', ['--concurrency', '8', '--duration', '3s']],
  ['500 calls/s open loop', ['--rate', '500', '--duration', '3s']],
] as const;

describe('weights over their whole range, busy and at light load', () => {
  it('one backend at weight 1000 beside two at 100 gets 83% +- 3 points of the calls, at 8 in flight and at 500 calls/s', async () => {
    const [heavy] = await Promise.all([startServer('w1000', 1000), startServer('w1000', 100), startServer('w1000', 100)]);
    for (const [mode, args] of MODES) {
      const r = await startLoad('w1000', [...args]).report;
      console.log(`[lb weights] 1000/100/100, ${mode}: heavy ${sharePct(r, heavy.addr).toFixed(2)}% of ${r.ok} calls, ${r.failed} failed`);
      expect(Math.abs(sharePct(r, heavy.addr) - 100000 / 1200)).toBeLessThanOrEqual(3);
      expect(r.failed).toBe(0);
    }
  });

  it('one backend at weight 1 beside two at 100 gets at most 1% of the calls, at 8 in flight and at 500 calls/s', async () => {
    const [light] = await Promise.all([startServer('w1', 1), startServer('w1', 100), startServer('w1', 100)]);
    for (const [mode, args] of MODES) {
      const r = await startLoad('w1', [...args]).report;
      console.log(`[lb weights] 1/100/100, ${mode}: light ${sharePct(r, light.addr).toFixed(2)}% of ${r.ok} calls (weight share 0.50%), ${r.failed} failed`);
      expect(sharePct(r, light.addr)).toBeLessThanOrEqual(1);
      expect(r.failed).toBe(0);
    }
  });

  it('weight 0 written into the registry drains the backend: no new calls, nothing fails, and a weight again brings it back', async () => {
    const [a, b] = await Promise.all([startServer('w0', 100), startServer('w0', 100)]);
    const lease = BigInt((await t.client!.get(a.key).exec()).kvs[0].lease).toString(16);
    const csv = path.join(tmp, 'drain.csv');
    const load = startLoad('w0', ['--concurrency', '8', '--duration', '5s', '--csv', csv]);
    await load.proc.waitForLog('lb.endpoint_state', { addr: a.addr, to: 'ACTIVE' });
    await new Promise((r) => setTimeout(r, 1_500));
    // Under its own lease, as an operator would with etcdctl put --lease.
    await t.etcd!.etcdctl(['put', `--lease=${lease}`, a.key, encodeEndpoint(a.addr, { weight: 0 })]);
    const drained = await load.proc.waitForLog('lb.endpoint_state', { addr: a.addr, to: 'DRAINING' });
    const drainedAt = Date.now();
    // Over two seconds drained, so at least one whole second of the CSV falls inside.
    await new Promise((r) => setTimeout(r, 2_200));
    await t.etcd!.etcdctl(['put', `--lease=${lease}`, a.key, encodeEndpoint(a.addr, { weight: 100 })]);
    const back = await load.proc.waitForLog('lb.endpoint_state', { addr: a.addr, from: 'DRAINING', to: 'ACTIVE' });
    const r = await load.report;
    const rows = readFileSync(csv, 'utf8').trim().split('\n').map((l) => l.split(','));
    const col = rows[0].indexOf(`calls:${a.addr}`);
    const perSecond = rows.slice(1).map((row) => Number(row[col]));
    // The seconds wholly inside the drain (from one after it was applied to the one before it ended).
    const start = Number(load.proc.logs.find((l) => l.event === 'load.started')!.time);
    const first = Math.ceil(((drained.time as number) - start) / 1000) + 1;
    const last = Math.floor(((back.time as number) - start) / 1000);
    const during = perSecond.slice(first - 1, last);
    console.log(`[lb weights] drain: ${a.addr} calls per second ${perSecond.join(' ')} (drained in seconds ${first}..${last}: ${during.join(' ')}); ${r.failed} failed; ${b.addr} ${r.backends[b.addr]} calls; applied ${drainedAt - start} ms into the run`);
    expect(r.failed).toBe(0);
    expect(during.length).toBeGreaterThan(0);
    expect(during.every((n) => n === 0)).toBe(true);
    expect(perSecond.at(-1)).toBeGreaterThan(0); // back in the rotation
  });
});
