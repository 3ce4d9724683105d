import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, REPO, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { peerProcess } from './harness/peer-process';
import { needTool } from './harness/need-tool';
import { buildGoPeers, ensureGoToolchain, type GoPeers } from './harness/peer-go';
import type { PeerAvailability } from './harness/peer-debian';
import type { LoadReport } from '../services/load-generator';

/**
 * Client-side health checking (gRPC A17) across languages (issue 21.4):
 *
 * - A Go greeter on grpc-go's health.Server, registered by etcd's
 *   endpoints.Manager, flipped NOT_SERVING and back (SIGUSR1/SIGUSR2) while
 *   its registration stays, beside two mesh servers: `mesh load` gives it
 *   no calls within 1 s and its share again once SERVING, 0 failed.
 *   `mesh health` reads its status as grpc_health_probe would.
 * - A grpc-go client with healthCheckConfig (round_robin on etcd's
 *   resolver) stops calling a library server (serveAndRegister,
 *   test/peers/node/flip-server.js) that its owner flips NOT_SERVING; the
 *   server is registered by hand, so health is the only signal.
 */

let toolchain: PeerAvailability = { ok: false, reason: 'set-up did not run' };
let t: Partial<TestEtcd> = {};
let go: GoPeers;

beforeAll(async () => {
  toolchain = await ensureGoToolchain();
  if (!toolchain.ok) return console.warn(`interop-go-health: skipped: ${toolchain.reason}`);
  go = await buildGoPeers();
  t = await startTestEtcd(1);
}, 1_500_000);

afterAll(async () => {
  await stopTestEtcd(t, () => MeshProcess.killAll());
});

function needGo(ctx: TestContext): void {
  needTool(ctx, toolchain, 'golang-go golang-etcd-server-dev golang-google-grpc-dev');
}

async function startMeshServer(prefix: string): Promise<string> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--ttl', '5']);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return `127.0.0.1:${port}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('health checking across Go and Node', () => {
  it('mesh load gives a Go greeter that reports NOT_SERVING (still registered) no calls within 1 s, its share again once SERVING; 0 failed', async (ctx) => {
    needGo(ctx);
    const port = await freePort();
    const goAddr = `127.0.0.1:${port}`;
    const gs = peerProcess(go.server, ['-port', String(port), '-etcd', t.etcd!.endpoints, '-target', 'igh1/greeter', '-ttl', '5']);
    await gs.waitForLog('registered');
    const mesh = await Promise.all([startMeshServer('igh1'), startMeshServer('igh1')]);

    // mesh health reads grpc-go's health service as grpc_health_probe would.
    expect((await runMesh(['health', goAddr])).stdout).toEqual(['SERVING']);
    expect((await runMesh(['health', goAddr, '--service', 'helloworld.Greeter'])).code).toBe(0);
    expect((await runMesh(['health', goAddr, '--service', 'no.Such'])).code).toBe(1);

    const load = new MeshProcess(['load', '--etcd', t.etcd!.endpoints, '--prefix', 'igh1', '--concurrency', '16', '--duration', '7s', '--json']);
    await load.waitForLog('lb.endpoint_state', { addr: goAddr, to: 'ACTIVE' });
    await sleep(2000);
    gs.kill('SIGUSR1');
    const down = await gs.waitForLog('health');
    const probeDown = await runMesh(['health', goAddr]);
    await sleep(2500);
    gs.kill('SIGUSR2');
    await waitFor('the Go greeter back to SERVING', () => gs.logsNamed('health')[1], 5_000);
    const up = gs.logsNamed('health')[1];
    expect(await load.exitWithin(20_000), load.stderr.slice(-5).join('\n')).toBe(0);
    // The registration stayed all along: only health checking moved the calls.
    expect((await t.etcd!.etcdctl(['get', `igh1/greeter/${goAddr}`, '--print-value-only'])).stdout.trim()).not.toBe('');
    await gs.stop();
    const stopped = await gs.waitForLog('stopped');
    const report = JSON.parse(load.stdout[load.stdout.length - 1]) as LoadReport;

    const toZeroMs = Math.max(0, (up.lastCallMs as number) - (down.atMs as number));
    const duringDown = (up.calls as number) - (down.calls as number);
    const afterUp = (stopped.calls as number) - (up.calls as number);
    console.log(
      `Go NOT_SERVING: last call ${toZeroMs} ms after the flip, ${duringDown} calls while NOT_SERVING (2.5 s), ${afterUp} after SERVING again; load ${report.ok} ok, ${report.failed} failed, ${report.rps} rps, backends ${JSON.stringify(report.backends)} (mesh ${mesh.join(', ')})`,
    );
    expect([probeDown.code, probeDown.stdout]).toEqual([1, ['NOT_SERVING']]);
    expect(toZeroMs).toBeLessThan(1000);
    expect(afterUp).toBeGreaterThan(50);
    expect(report.failed).toBe(0);
  }, 90_000);

  it('a Go client with healthCheckConfig stops calling a library server its owner flips NOT_SERVING (registered by hand: health is the only signal), and comes back', async (ctx) => {
    needGo(ctx);
    const meshAddr = await startMeshServer('igh2');
    const port = await freePort();
    const flipAddr = `127.0.0.1:${port}`;
    const flip = peerProcess(process.execPath, [path.join(REPO, 'test', 'peers', 'node', 'flip-server.js'), '--port', String(port)], { MESH_LOG_FORMAT: 'json' });
    await flip.waitForLog('serving');
    await t.etcd!.etcdctl(['put', `igh2/greeter/${flipAddr}`, JSON.stringify({ Op: 0, Addr: flipAddr, Metadata: null })]);

    const client = peerProcess(go.client, ['-etcd', t.etcd!.endpoints, '-target', 'etcd:///igh2/greeter', '-authority', 'greeter', '-backends', '2', '-health-check', '-duration', '6s']);
    await client.waitForLog('tick', {}, 15_000);
    await sleep(1500);
    flip.kill('SIGUSR1');
    const down = await flip.waitForLog('health');
    await sleep(2000);
    flip.kill('SIGUSR2');
    await waitFor('flip-server SERVING again', () => flip.logsNamed('health')[1], 5_000);
    const up = flip.logsNamed('health')[1];
    expect(await client.exitWithin(20_000), client.stderr.slice(-5).join('\n')).toBe(0);

    const ticks = client.logsNamed('tick') as { atMs: number; backends: Record<string, number>; failed: number }[];
    const downAt = down.atMs as number;
    const upAt = up.atMs as number;
    // A tick counts the calls of the 100 ms before it: the last one with calls to the flipped server bounds the time to 0 calls.
    const lastWithCalls = Math.max(downAt, ...ticks.filter((k) => k.atMs < upAt && (k.backends[flipAddr] ?? 0) > 0).map((k) => k.atMs));
    const inDown = ticks.filter((k) => k.atMs >= downAt + 1000 && k.atMs < upAt).reduce((n, k) => n + (k.backends[flipAddr] ?? 0), 0);
    const afterUp = ticks.filter((k) => k.atMs >= upAt + 500).reduce((n, k) => n + (k.backends[flipAddr] ?? 0), 0);
    const failed = ticks.reduce((n, k) => n + k.failed, 0);
    const done = client.logsNamed('done')[0];
    console.log(`Go client, healthCheckConfig: last calls to the NOT_SERVING library server within ${lastWithCalls - downAt} ms of the flip (100 ms ticks), ${inDown} in [flip+1 s, SERVING), ${afterUp} after SERVING again; ${JSON.stringify(done)}; mesh server ${meshAddr}`);
    expect(lastWithCalls - downAt).toBeLessThan(1000);
    expect(inDown).toBe(0);
    expect(afterUp).toBeGreaterThan(0);
    expect(failed).toBe(0);
    flip.kill('SIGTERM');
    expect(await flip.exitWithin(10_000)).toBe(0);
  }, 90_000);
});
