import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { freePort } from './harness/ports';
import { peerProcess, type PeerEvent } from './harness/peer-process';
import { buildGoPeers, ensureGoToolchain, type GoPeers } from './harness/peer-go';
import type { PeerAvailability } from './harness/peer-debian';
import type { LoadReport } from '../services/load-generator';
import { needTool } from './harness/need-tool';

/**
 * Requirement 7: Go peers on etcd's own naming packages (Debian's
 * golang-etcd-server-dev: go.etcd.io/etcd/clientv3/naming/{endpoints,resolver}),
 * grpc-go from golang-google-grpc-dev, built in GOPATH mode
 * (test/peers/go, cached under .tmp/go-peers/).
 *
 * - A Go greeter registered by endpoints.Manager under a lease, with
 *   grpc-go's default keepalive enforcement, is a backend like any other.
 * - A Go client on etcd's resolver (round_robin, so it dials every backend)
 *   reaches every mesh server: no panic (etcd issue 19700: a JSON object in
 *   Metadata is an unhashable map in grpc-go's resolver.Address), no error.
 *   It sets grpc.WithAuthority("greeter"): grpc-go's default :authority for
 *   etcd:///services/greeter is "services/greeter", and Node's HTTP/2 layer
 *   (nghttp2's header validation, before grpc-js sees the call) refuses a
 *   '/' in :authority with RST_STREAM PROTOCOL_ERROR; the last test pins
 *   that down.
 */

let toolchain: PeerAvailability = { ok: false, reason: 'set-up did not run' };
let t: Partial<TestEtcd> = {};
let go: GoPeers;

// A bare machine: installing Go and the sources takes minutes, a cold build one or two.
beforeAll(async () => {
  toolchain = await ensureGoToolchain();
  if (!toolchain.ok) return console.warn(`interop-go: skipped: ${toolchain.reason}`);
  go = await buildGoPeers();
  console.log(`interop-go: Go peers ${go.cached ? 'taken from the cache (.tmp/go-peers)' : `built in ${(go.buildMs / 1000).toFixed(1)} s`}`);
  t = await startTestEtcd(1);
}, 1_500_000);

/** Skip (with the reason as the note) when the Go toolchain or etcd's Go sources cannot be had. */
function needGo(ctx: TestContext): void {
  needTool(ctx, toolchain, 'golang-go golang-etcd-server-dev golang-google-grpc-dev');
}

afterAll(async () => {
  await stopTestEtcd(t);
});

const SHOW_GRPC_ERRORS = { GRPC_VERBOSITY: 'ERROR' };
const excessPings = (stderr: string[]): string[] => stderr.filter((l) => /excess pings|too_many_pings/i.test(l));

/** The Go greeter, registered by endpoints.Manager as <prefix>/greeter/127.0.0.1:PORT. */
async function startGoServer(prefix: string): Promise<{ proc: MeshProcess; addr: string; peers: () => PeerEvent[] }> {
  const port = await freePort();
  const proc = peerProcess(go.server, ['-port', String(port), '-etcd', t.etcd!.endpoints, '-target', `${prefix}/greeter`, '-ttl', '5']);
  await proc.waitForLog('registered');
  return { proc, addr: `127.0.0.1:${port}`, peers: () => proc.logsNamed('peer') };
}

async function startMeshServer(prefix: string, extra: string[] = []): Promise<string> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--ttl', '5', ...extra]);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return `127.0.0.1:${port}`;
}

/** A mesh server with --no-register, registered by etcdctl in Go's format with this Metadata. */
async function startHandRegistered(prefix: string, metadata: unknown): Promise<string> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--no-register']);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  const addr = `127.0.0.1:${port}`;
  await t.etcd!.etcdctl(['put', `${prefix}/greeter/${addr}`, JSON.stringify({ Op: 0, Addr: addr, Metadata: metadata })]);
  return addr;
}

/** Run the Go client on etcd's resolver; its last stdout line is {"event":"done",...}. */
async function runGoClient(args: string[]): Promise<{ code: number | null; done: PeerEvent | undefined; errors: PeerEvent[]; stderr: string[] }> {
  const proc = peerProcess(go.client, ['-etcd', t.etcd!.endpoints, ...args]);
  const code = await proc.exitWithin(40_000);
  return { code, done: proc.logsNamed('done')[0], errors: proc.logsNamed('error'), stderr: proc.stderr };
}

describe('Go peers on etcd naming (endpoints.Manager, clientv3/naming/resolver)', () => {
  it("Go's endpoints.Manager registration is read as a backend: mesh load balances onto it, one connection, 0 failed", async (ctx) => {
    needGo(ctx);
    const gs = await startGoServer('igo1');
    const { stdout } = await t.etcd!.etcdctl(['get', `igo1/greeter/${gs.addr}`, '--print-value-only']);
    expect(JSON.parse(stdout)).toEqual({ Op: 0, Addr: gs.addr, Metadata: null });
    const mesh = await Promise.all([startMeshServer('igo1'), startMeshServer('igo1')]);
    const load = await runMesh(['load', '--etcd', t.etcd!.endpoints, '--prefix', 'igo1', '--concurrency', '16', '--duration', '4s', '--json'], SHOW_GRPC_ERRORS, 60_000);
    expect(load.code, load.stderr.slice(-5).join('\n')).toBe(0);
    const report = JSON.parse(load.stdout[load.stdout.length - 1]) as LoadReport;
    const share = (report.backends[gs.addr] ?? 0) / report.ok;
    console.log(`interop-go load: ${report.ok} ok, ${report.failed} failed, ${report.rps} rps, p99 ${report.latencyMs.p99} ms, Go share ${(share * 100).toFixed(1)}% (mesh ${mesh.map((a) => report.backends[a] ?? 0).join('/')}, Go ${report.backends[gs.addr] ?? 0}), connections ${gs.peers().length}`);
    expect(report.failed).toBe(0);
    expect(share).toBeGreaterThanOrEqual(0.15);
    for (const a of mesh) expect(report.backends[a] ?? 0).toBeGreaterThan(0);
    expect(excessPings(load.stderr)).toEqual([]);
    expect(gs.peers()).toHaveLength(1);
  }, 60_000);

  it('a mesh client calling the Go server once a second keeps one connection (grpc-go default keepalive enforcement)', async (ctx) => {
    needGo(ctx);
    const gs = await startGoServer('igo2');
    const run = await runMesh(['client', '--etcd', t.etcd!.endpoints, '--prefix', 'igo2', '--interval', '1s', '--count', '5'], SHOW_GRPC_ERRORS, 60_000);
    console.log(`interop-go idle: ${run.stdout.length} replies, connections seen by the Go server: ${gs.peers().length}, GOAWAY too_many_pings seen by the client: ${excessPings(run.stderr).length}`);
    expect(run.code, run.stderr.slice(-5).join('\n')).toBe(0);
    expect(run.stdout.filter((l) => l.endsWith(` from ${gs.addr}`))).toHaveLength(5);
    expect(excessPings(run.stderr)).toEqual([]);
    expect(gs.peers()).toHaveLength(1);
  }, 60_000);

  it('a Go client on etcd\'s resolver reaches every mesh server: no panic, no error (grpc.WithAuthority("greeter"))', async (ctx) => {
    needGo(ctx);
    const mesh = await Promise.all([startMeshServer('igo3'), startMeshServer('igo3'), startMeshServer('igo3')]);
    // Beside them, one registered by hand with our attributes as a JSON
    // string in Metadata (the form the contract prescribes), so the Go side
    // of that form is checked whatever the mesh writer does.
    mesh.push(await startHandRegistered('igo3', JSON.stringify({ weight: 100, zone: 'a' })));
    const run = await runGoClient(['-target', 'etcd:///igo3/greeter', '-authority', 'greeter', '-backends', String(mesh.length), '-count', '40']);
    const panic = run.stderr.find((l) => l.startsWith('panic:'));
    console.log(`interop-go client: exit ${run.code}, ${JSON.stringify(run.done)}, ${run.errors.length} errors${panic ? `, ${panic}` : ''}`);
    expect(run.stderr.filter((l) => l.startsWith('panic:'))).toEqual([]);
    expect(run.code, run.stderr.slice(-8).join('\n')).toBe(0);
    expect(run.errors).toEqual([]);
    expect(run.done).toMatchObject({ ok: 40, failed: 0 });
    const backends = run.done!.backends as Record<string, number>;
    for (const a of mesh) expect(backends[a] ?? 0, `calls to ${a}`).toBeGreaterThan(0);
  }, 60_000);

  it("documents why WithAuthority: without it grpc-go sends :authority \"<prefix>/greeter\", which Node's HTTP/2 refuses (RST_STREAM PROTOCOL_ERROR)", async (ctx) => {
    needGo(ctx);
    // Registered with Metadata null by hand, so this isolates the :authority
    // question from the Metadata one above.
    await startHandRegistered('igo4', null);
    const run = await runGoClient(['-target', 'etcd:///igo4/greeter', '-backends', '0', '-count', '3']);
    expect(run.stderr.filter((l) => l.startsWith('panic:'))).toEqual([]);
    expect(run.done).toMatchObject({ ok: 0, failed: 3 });
    for (const e of run.errors) expect(String(e.error)).toMatch(/RST_STREAM with error code: PROTOCOL_ERROR/);
  }, 60_000);
});
