import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, it, type TestContext } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { peerProcess } from './harness/peer-process';
import { ensurePythonGrpc, PythonGreeter } from './harness/peer-python';
import { buildGoPeers, ensureGoToolchain, type GoPeers } from './harness/peer-go';
import { EtcdctlRegistration } from './harness/peer-etcdctl';
import type { PeerAvailability } from './harness/peer-debian';
import { needTool } from './harness/need-tool';
import { XDS_CLIENT_KINDS, XdsClientPeer, type XdsClientKind } from './harness/peer-xds-client';
import { greeterPackage } from '../services/greeter-proto';
import { encodeEndpoint } from '../balancer/endpoint-codec';

/**
 * Requirement 4 of issue 22: xDS clients we did not write, gRPC's C core
 * (Debian's python3-grpcio 1.51) and @grpc/grpc-js-xds 1.14, each resolving
 * `xds:///<service>` through a real `mesh xds` on a real etcd, calling real
 * servers: mesh servers, a C-core server registered by etcdctl, and a Go
 * server registered by etcd's endpoints.Manager (when the Go peers can be
 * built). Each client has a service of its own, so the two run side by side.
 */

let python: PeerAvailability = { ok: false, reason: 'set-up did not run' };
let goTools: PeerAvailability = { ok: false, reason: 'set-up did not run' };
let go: GoPeers | undefined;
let t: Partial<TestEtcd> = {};
let dir = '';
/** The control planes: round_robin (the default), ring_hash, least_request; `mesh xds` processes. */
const planes: Record<string, { proc: MeshProcess; addr: string; metrics: string; bootstrap: Record<XdsClientKind, string> }> = {};
const registrations: EtcdctlRegistration[] = [];
const grpcServers: grpc.Server[] = [];
const clients: XdsClientPeer[] = [];

const TTL = 2;

async function startPlane(lb: string, port?: number): Promise<(typeof planes)[string]> {
  const listen = `127.0.0.1:${port ?? (await freePort())}`;
  const metrics = `127.0.0.1:${await freePort()}`;
  const proc = new MeshProcess(['xds', '--listen', listen, '--etcd', t.etcd!.endpoints, '--lb', lb, '--metrics', metrics]);
  await waitFor(`mesh xds --lb ${lb} listening`, () => (proc.stdout[0] ? true : proc.running ? undefined : Promise.reject(new Error(proc.stderr.join('\n')))), 15_000);
  const bootstrap = {} as Record<XdsClientKind, string>;
  for (const kind of XDS_CLIENT_KINDS) {
    // The bootstrap exactly as `mesh xds --print-bootstrap` prints it, used as is.
    const run = await runMesh(['xds', '--print-bootstrap', '--listen', listen, '--node-id', `test-${kind}-${lb}`]);
    bootstrap[kind] = path.join(dir, `bootstrap-${kind}-${lb}.json`);
    writeFileSync(bootstrap[kind], run.stdout.join('\n'));
  }
  return { proc, addr: proc.stdout[0], metrics, bootstrap };
}

beforeAll(async () => {
  [python, goTools] = await Promise.all([ensurePythonGrpc(), ensureGoToolchain()]);
  if (goTools.ok) go = await buildGoPeers();
  dir = mkdtempSync(path.join(tmpdir(), 'mesh-xds-'));
  t = await startTestEtcd(1);
  const [rr, rh, lr] = await Promise.all(['round_robin', 'ring_hash', 'least_request'].map((lb) => startPlane(lb)));
  Object.assign(planes, { round_robin: rr, ring_hash: rh, least_request: lr });
}, 600_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.stop()));
  for (const g of grpcServers) g.forceShutdown();
  await stopTestEtcd(t, async () => {
    await Promise.all(registrations.map((r) => r.close()));
  });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function needClient(ctx: TestContext, kind: XdsClientKind): void {
  if (kind === 'c-core') needTool(ctx, python, 'python3-grpcio');
}

interface Backend {
  addr: string;
  key: string;
  /** Epoch ms at which its key was written. */
  registeredAt: number;
  proc?: MeshProcess;
  reg?: EtcdctlRegistration;
}

async function meshServer(service: string, extra: string[] = []): Promise<Backend> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--service', service, '--ttl', String(TTL), ...extra]);
  const line = await proc.waitForLog('registration.state', { to: 'REGISTERED' });
  return { addr: `127.0.0.1:${port}`, key: `services/${service}/127.0.0.1:${port}`, registeredAt: Number(line.time), proc };
}

async function cCoreServer(service: string): Promise<Backend> {
  const py = await PythonGreeter.start(await freePort());
  const key = `services/${service}/${py.addr}`;
  const reg = await EtcdctlRegistration.register(t.etcd!, key, py.addr, TTL);
  registrations.push(reg);
  return { addr: py.addr, key, registeredAt: Date.now(), reg };
}

async function goServer(service: string): Promise<Backend> {
  const port = await freePort();
  const proc = peerProcess(go!.server, ['-port', String(port), '-etcd', t.etcd!.endpoints, '-target', `services/${service}`, '-ttl', '5']);
  await proc.waitForLog('registered');
  return { addr: `127.0.0.1:${port}`, key: `services/${service}/127.0.0.1:${port}`, registeredAt: Date.now() };
}

async function client(kind: XdsClientKind, service: string, lb = 'round_robin', rate = 100): Promise<XdsClientPeer> {
  const c = await XdsClientPeer.start(kind, `xds:///${service}`, planes[lb].bootstrap[kind], { rate });
  clients.push(c);
  return c;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A greeter in this process whose every call fails (INTERNAL), registered by hand: a broken backend that looks fast. */
async function brokenServer(service: string): Promise<Backend> {
  const server = new grpc.Server();
  server.addService(greeterPackage().Greeter.service, { SayHello: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.INTERNAL, details: 'broken on purpose' }) });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  grpcServers.push(server);
  const addr = `127.0.0.1:${port}`;
  const key = `services/${service}/${addr}`;
  await t.client!.put(key).value(encodeEndpoint(addr));
  return { addr, key, registeredAt: Date.now() };
}

describe.concurrent('xDS clients we did not write, through mesh xds', () => {
  for (const kind of XDS_CLIENT_KINDS) {
    it(`${kind}: reaches every registered server (mesh, C core by etcdctl, Go by endpoints.Manager), takes a joiner within 1 s, moves off a draining one, stops calling a SIGKILLed one once its lease is gone`, async (ctx) => {
      needClient(ctx, kind);
      if (kind === 'grpc-js-xds') needTool(ctx, python, 'python3-grpcio'); // the C-core server
      const { expect } = ctx;
      const service = `reach-${kind}`;
      const backends = await Promise.all([meshServer(service), meshServer(service), cCoreServer(service), ...(go ? [goServer(service)] : [])]);
      const c = await client(kind, service);
      const readyAt = Math.max(...(await c.waitForBackends(backends.map((b) => b.addr))));

      const joiner = await meshServer(service);
      const [joinedAt] = await c.waitForBackends([joiner.addr], 5_000);
      const joinMs = joinedAt - joiner.registeredAt;

      // Drain the C-core server: its registration rewritten with the draining mark, under its own lease.
      const drained = backends[2];
      const drainAt = Date.now();
      await t.etcd!.etcdctl(['put', `--lease=${drained.reg!.leaseId}`, drained.key, JSON.stringify({ Op: 0, Addr: drained.addr, Metadata: JSON.stringify({ draining: true }) })]);
      await sleep(1_500);
      await c.flush();
      const drainMs = c.lastCallTo(drained.addr) - drainAt;

      // SIGKILL a mesh server; its key goes when its lease expires (TTL 2 s).
      const killed = backends[0];
      const killAt = Date.now();
      const failedBefore = c.failed();
      killed.proc!.kill('SIGKILL');
      await waitFor(`lease of ${killed.key} gone`, async () => ((await t.client!.get(killed.key).string()) === null ? true : undefined), 10_000, 50);
      const goneAt = Date.now();
      await sleep(1_000);
      await c.flush();
      const failedAtKill = c.failed() - failedBefore;
      const after = c.totals(goneAt);
      const startAt = c.ticks[0]?.t ?? 0;
      console.log(`xds ${kind}: failed calls: before all backends answered ${c.failed(0, c.firstAt(backends[backends.length - 1].addr) ?? 0)}, until the kill ${c.failed(0, killAt)} (${c.proc.logsNamed('error').map((e) => `${Number(e.t) - startAt} ms ${String(e.code)}: ${String(e.details)}`).join('; ')}); joiner registered at +${joiner.registeredAt - startAt} ms, drain at +${drainAt - startAt} ms`);
      console.log(`xds ${kind}: ${backends.length + 1} backends reached; joiner's first call ${joinMs} ms after its registration; last call to the draining one ${drainMs} ms after the drain mark; SIGKILLed one: last call ${c.lastCallTo(killed.addr) - killAt} ms after the kill, lease gone ${goneAt - killAt} ms after, ${failedAtKill} calls failed at the kill (${c.errors().slice(-1)}); after: ${JSON.stringify(after)}`);
      expect(joinMs).toBeLessThan(1_000);
      expect(drainMs).toBeLessThan(1_000);
      expect(after[killed.addr] ?? 0).toBe(0);
      expect(after[drained.addr] ?? 0).toBe(0);
      for (const b of [backends[1], joiner, ...backends.slice(3)]) expect(after[b.addr] ?? 0).toBeGreaterThan(0);
      // From the moment every backend answered (calls made before the client had its first config are its start-up, not ours).
      expect(c.failed(readyAt, killAt)).toBe(0);
    }, 45_000);
  }

  for (const kind of XDS_CLIENT_KINDS) {
    it(`${kind}: outlier detection (A50) from the Cluster: a backend failing every call is ejected within about 2 s, while it stays registered`, async (ctx) => {
      needClient(ctx, kind);
      const { expect } = ctx;
      const service = `eject-${kind}`;
      const good = await Promise.all([meshServer(service), meshServer(service)]);
      const c = await client(kind, service, 'round_robin', 150);
      await c.waitForBackends(good.map((g) => g.addr));
      const broken = await brokenServer(service);
      const t0 = Date.now();
      await sleep(5_000);
      await c.flush();
      const early = c.failed(t0, t0 + 2_000);
      const late = c.failed(t0 + 2_500, t0 + 5_000);
      const lateCalls = Object.values(c.totals(t0 + 2_500, t0 + 5_000)).reduce((a, b) => a + b, 0);
      console.log(`xds ${kind} outlier detection: ${early} calls failed in the 2 s after a broken backend registered, ${late} of ${lateCalls + late} in the 2.5 s after that (${c.errors().slice(-1)})`);
      expect(early).toBeGreaterThan(0);
      expect(late).toBe(0);
      expect(lateCalls).toBeGreaterThan(100);
    }, 30_000);
  }

  it('weights and zones: shares each client gives A (weight 100, zone a), B (300, a), C (100, b) under round_robin, ring_hash and least_request', async (ctx) => {
    const { expect } = ctx;
    const service = 'shares';
    const [a, b, c] = await Promise.all([meshServer(service, ['--weight', '100', '--zone', 'a']), meshServer(service, ['--weight', '300', '--zone', 'a']), meshServer(service, ['--weight', '100', '--zone', 'b'])]);
    const kinds = XDS_CLIENT_KINDS.filter((k) => k !== 'c-core' || python.ok);
    const runs = kinds.flatMap((kind) => ['round_robin', 'ring_hash', 'least_request'].map((lb) => ({ kind, lb })));
    const peers = await Promise.all(runs.map((r) => client(r.kind, service, r.lb, 150)));
    await Promise.all(peers.map((p) => p.waitForBackends([a.addr, b.addr, c.addr])));
    const from = Date.now();
    await sleep(3_000);
    await Promise.all(peers.map((p) => p.flush()));
    const rows = runs.map((r, i) => {
      const s = peers[i].shares(from, Date.now());
      return { ...r, a: s[a.addr] ?? 0, b: s[b.addr] ?? 0, c: s[c.addr] ?? 0, calls: Object.values(peers[i].totals(from)).reduce((x, y) => x + y, 0), failed: peers[i].failed(from) };
    });
    const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
    console.log(['xds shares (A w100 zone a, B w300 zone a, C w100 zone b; endpoint weights honoured: 20/60/20; zone weights only: 40/40/20):', ...rows.map((r) => `  ${r.kind} ${r.lb}: A ${pct(r.a)} B ${pct(r.b)} C ${pct(r.c)} (${r.calls} calls, ${r.failed} failed)`)].join('\n'));
    await Promise.all(peers.map((p) => p.stop()));
    for (const r of rows) {
      expect(r.failed).toBe(0);
      if (r.kind === 'grpc-js-xds' && r.lb === 'ring_hash') {
        // A42: a ring entry's weight is locality weight x endpoint weight: 40000 : 120000 : 10000.
        expect(r.b).toBeGreaterThan(r.a * 2);
        expect(r.c).toBeLessThan(0.12);
      } else {
        // round_robin, and the fallbacks to it: locality (zone) weights 400 : 100, round robin inside a zone.
        expect(r.c).toBeGreaterThan(0.1);
        expect(r.c).toBeLessThan(0.3);
        expect(Math.abs(r.a - r.b)).toBeLessThan(0.1);
      }
    }
  }, 45_000);
});

describe('the control plane killed for 5 s', () => {
  it('clients keep calling on what they were told (0 failed calls) and resync when it returns', async (ctx) => {
    const { expect } = ctx;
    const service = 'outage';
    const servers = await Promise.all([meshServer(service), meshServer(service)]);
    const kinds = XDS_CLIENT_KINDS.filter((k) => k !== 'c-core' || python.ok);
    const peers = await Promise.all(kinds.map((k) => client(k, service)));
    await Promise.all(peers.map((p) => p.waitForBackends(servers.map((s) => s.addr))));
    const plane = planes.round_robin;
    const nacks = await (await fetch(`http://${plane.metrics}/metrics`)).text();
    expect(nacks).not.toMatch(/^mesh_xds_nacks_total\{[^}]*\} [1-9]/m);
    const killAt = Date.now();
    plane.proc.kill('SIGKILL');
    await plane.proc.exited;
    await sleep(5_000);
    await Promise.all(peers.map((p) => p.flush()));
    const during = peers.map((p) => ({ failed: p.failed(killAt), calls: Object.values(p.totals(killAt)).reduce((x, y) => x + y, 0) }));
    // Back on the same address (a fresh process, stateless), then a joiner only the new one knows about.
    const back = await startPlane('round_robin', Number(plane.addr.split(':')[1]));
    const backAt = Date.now();
    const joiner = await meshServer(service);
    const resync = await Promise.all(peers.map((p) => p.waitForBackends([joiner.addr], 20_000)));
    console.log(`xds control plane SIGKILLed for 5 s: ${kinds.map((k, i) => `${k} ${during[i].calls} calls, ${during[i].failed} failed, joiner reached ${resync[i][0] - backAt} ms after the control plane returned`).join('; ')}`);
    for (const d of during) {
      expect(d.failed).toBe(0);
      expect(d.calls).toBeGreaterThan(300);
    }
    planes.round_robin = back;
  }, 45_000);
});
