import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { createServer } from 'node:net';
import { freePort, waitFor } from './harness/ports';

/** One sample of the Prometheus text format. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** GET http://addr/metrics and parse the samples (and the # TYPE lines). */
async function scrape(addr: string): Promise<{ samples: Sample[]; types: Map<string, string>; contentType: string }> {
  const res = await fetch(`http://${addr}/metrics`);
  expect(res.status).toBe(200);
  const text = await res.text();
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1], t[2]);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { samples, types, contentType: res.headers.get('content-type') ?? '' };
}

/** Sum of the samples named `name` whose labels include `match`. */
function sum(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

const UNARY = { grpc_type: 'unary', grpc_service: 'helloworld.Greeter', grpc_method: 'SayHello' };
const PREFIX = 'metrics';
let t: TestEtcd;

beforeAll(async () => {
  t = await startTestEtcd(1);
});

afterAll(async () => {
  await stopTestEtcd(t);
});

async function startServer(): Promise<{ proc: MeshProcess; addr: string; metrics: string }> {
  const [port, mport] = [await freePort(), await freePort()];
  const metrics = `127.0.0.1:${mport}`;
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd.endpoints, '--prefix', PREFIX, '--ttl', '5', '--metrics', metrics]);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return { proc, addr: `127.0.0.1:${port}`, metrics };
}

describe('--metrics', () => {
  it('servers and a load client serve go-grpc-prometheus and mesh_ metrics with consistent values', async () => {
    const servers = [await startServer(), await startServer()];
    // The address is in each server's registry Metadata (a JSON string inside the Go record).
    for (const s of servers) {
      const raw = await t.client.get(`${PREFIX}/greeter/${s.addr}`).string();
      expect(JSON.parse(JSON.parse(raw!).Metadata).metrics).toBe(s.metrics);
    }
    const loadMetrics = `127.0.0.1:${await freePort()}`;
    const load = new MeshProcess(['load', '--etcd', t.etcd.endpoints, '--prefix', PREFIX, '--concurrency', '4', '--duration', '6s', '--warmup', '0s', '--json', '--metrics', loadMetrics]);
    await load.waitForLog('metrics.listening', { addr: loadMetrics });

    // While the load runs: both backends picked, calls counted, the resolver watching.
    let during = await scrape(loadMetrics);
    await waitFor('picks on both backends and OK calls in the load client metrics', async () => {
      during = await scrape(loadMetrics);
      return servers.every((s) => sum(during.samples, 'mesh_lb_picks_total', { backend: s.addr }) > 0) && sum(during.samples, 'grpc_client_handled_total', { ...UNARY, grpc_code: 'OK' }) > 50;
    }, 10_000);
    const d = during.samples;
    expect(during.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(during.types.get('grpc_client_started_total')).toBe('counter');
    expect(during.types.get('grpc_client_handling_seconds')).toBe('histogram');
    expect(sum(d, 'grpc_client_started_total', UNARY)).toBeGreaterThanOrEqual(sum(d, 'grpc_client_handled_total', UNARY));
    expect(sum(d, 'grpc_client_handling_seconds_count', UNARY)).toBe(sum(d, 'grpc_client_handled_total', UNARY));
    expect(sum(d, 'grpc_client_handling_seconds_bucket', { ...UNARY, le: '+Inf' })).toBe(sum(d, 'grpc_client_handled_total', UNARY));
    for (const s of servers) {
      const out = sum(d, 'mesh_lb_outstanding_calls', { backend: s.addr });
      expect(out).toBeGreaterThanOrEqual(0);
      expect(out).toBeLessThanOrEqual(4 * 5); // concurrency x attempts per call
    }
    expect(sum(d, 'mesh_resolver_endpoints', { registry: `${PREFIX}/greeter/` })).toBe(2);
    expect(sum(d, 'mesh_resolver_updates_total', { registry: `${PREFIX}/greeter/` })).toBeGreaterThanOrEqual(1);
    expect(sum(d, 'mesh_resolver_watch_state', { registry: `${PREFIX}/greeter/`, state: 'WATCHING' })).toBe(1);
    expect(sum(d, 'mesh_resolver_watch_state', { registry: `${PREFIX}/greeter/` })).toBe(1);
    expect(sum(d, 'mesh_resolver_delivery_lag_seconds_count', { registry: `${PREFIX}/greeter/` })).toBeGreaterThanOrEqual(1);
    for (const name of ['mesh_client_extra_attempts_total', 'mesh_retry_budget_refused_total']) expect(during.types.get(name)).toBe('counter');
    expect(sum(d, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(during.types.get('nodejs_eventloop_lag_seconds')).toBe('gauge');

    // A stopped backend (process paused, TCP open): calls stuck on it are hedged to the other, and counted.
    const hedges = () => scrape(loadMetrics).then((m) => sum(m.samples, 'mesh_client_extra_attempts_total', { kind: 'hedge' }));
    const hedgesBefore = await hedges();
    servers[0].proc.proc.kill('SIGSTOP');
    try {
      await waitFor('hedged attempts counted while a backend is stopped', async () => (await hedges()) > hedgesBefore, 3_000);
    } finally {
      servers[0].proc.proc.kill('SIGCONT');
    }

    expect((await load.exited).code).toBe(0);
    const report = JSON.parse(load.stdout[load.stdout.length - 1]) as { ok: number; backends: Record<string, number> };

    // Each server counted what it answered; together at least every call the load got OK (hedges add a few).
    let handled = 0;
    for (const s of servers) {
      const { samples, types } = await scrape(s.metrics);
      expect(types.get('grpc_server_handling_seconds')).toBe('histogram');
      const ok = sum(samples, 'grpc_server_handled_total', { ...UNARY, grpc_code: 'OK' });
      expect(ok).toBeGreaterThanOrEqual(report.backends[s.addr] ?? 0);
      expect(sum(samples, 'grpc_server_started_total', UNARY)).toBe(sum(samples, 'grpc_server_handled_total', UNARY));
      expect(sum(samples, 'grpc_server_handling_seconds_count', UNARY)).toBe(ok);
      expect(sum(samples, 'mesh_registration_lease_state', { key: `${PREFIX}/greeter/${s.addr}`, state: 'REGISTERED' })).toBe(1);
      handled += ok;
    }
    expect(handled).toBeGreaterThanOrEqual(report.ok);
    expect(handled).toBeLessThanOrEqual(report.ok * 1.25 + 50);
  }, 40_000);

  it('counts a re-registration after the lease is revoked behind the server', async () => {
    const s = await startServer();
    const key = `${PREFIX}/greeter/${s.addr}`;
    const lease = BigInt(/"lease":(\d+)/.exec((await t.etcd.etcdctl(['get', key, '-w', 'json'])).stdout)![1]);
    await t.etcd.etcdctl(['lease', 'revoke', lease.toString(16)]);
    await waitFor('re-registration counted', async () => sum((await scrape(s.metrics)).samples, 'mesh_registration_reregistrations_total', { key }) === 1, 10_000);
    const { samples } = await scrape(s.metrics);
    expect(sum(samples, 'mesh_registration_lease_state', { key, state: 'REGISTERED' })).toBe(1);
    await s.proc.stop();
  }, 20_000);

  it('rejects a bad --metrics value with one line and exit 2', async () => {
    const bads = ['nonsense', '127.0.0.1:99999', ':9464', '[zz]:80'];
    const cmds = ['load', 'server', 'client', 'demo'];
    // Parsed before etcd is touched: one command each, all at once.
    const runs = await Promise.all(bads.map((bad, i) => runMesh([cmds[i], '--metrics', bad, ...(cmds[i] === 'server' ? ['--port', '0'] : []), '--etcd', t.etcd.endpoints])));
    for (const [i, r] of runs.entries()) {
      const bad = bads[i];
      expect(r.code, bad).toBe(2);
      expect(r.stderr.filter((l) => l.trim() !== ''), bad).toHaveLength(1);
      expect(r.stderr[0]).toContain('--metrics');
    }
  }, 30_000);

  it('fails with exit 1 and one line when the metrics port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as { port: number }).port;
      const r = await runMesh(['load', '--metrics', `127.0.0.1:${port}`, '--etcd', t.etcd.endpoints, '--prefix', PREFIX]);
      expect(r.code).toBe(1);
      const plain = r.stderr.filter((l) => l.trim() !== '' && !l.startsWith('{'));
      expect(plain).toHaveLength(1);
      expect(plain[0]).toContain(`cannot serve metrics on 127.0.0.1:${port}`);
    } finally {
      taken.close();
    }
  }, 20_000);
});
