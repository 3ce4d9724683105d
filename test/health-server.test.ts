import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, REPO, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { peerProcess } from './harness/peer-process';
import { healthClientConstructor, type HealthCheckResponse, type HealthClient } from '../balancer/health-check-proto';
import { MeshServer } from '../services/mesh-server';

/**
 * The server side of grpc.health.v1 (issue 21.3), `mesh health` (21.5) and
 * server reflection (25.3): what `mesh server` and a library server answer,
 * from the first moment of a drain and when the owner flips NOT_SERVING.
 */

let t: Partial<TestEtcd> = {};
const clients: grpc.Client[] = [];

beforeAll(async () => {
  t = await startTestEtcd(1);
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stopTestEtcd(t, () => MeshProcess.killAll());
});

function healthClient(addr: string): HealthClient {
  const c = new (healthClientConstructor())(addr, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}

async function meshServer(prefix: string, extra: string[] = []): Promise<{ proc: MeshProcess; addr: string }> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--ttl', '5', ...extra]);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return { proc, addr: `127.0.0.1:${port}` };
}

/** Statuses a Watch receives, with when (performance.now()), and how it ended. */
function watch(client: HealthClient, service: string): { seen: { status: string; at: number }[]; ended: Promise<grpc.StatusObject> } {
  const seen: { status: string; at: number }[] = [];
  const call = client.Watch({ service });
  call.on('data', (r: HealthCheckResponse) => seen.push({ status: r.status, at: performance.now() }));
  call.on('error', () => undefined);
  return { seen, ended: new Promise((resolve) => call.on('status', resolve)) };
}

describe('grpc.health.v1 on mesh server, and mesh health', () => {
  it('Check: SERVING for "" and helloworld.Greeter, NOT_FOUND for another; mesh health exit codes and lines', async () => {
    const { addr } = await meshServer('hs1');
    const ok = await runMesh(['health', addr]);
    expect([ok.code, ok.stdout]).toEqual([0, ['SERVING']]);
    const greeter = await runMesh(['health', addr, '--service', 'helloworld.Greeter']);
    expect([greeter.code, greeter.stdout]).toEqual([0, ['SERVING']]);
    const unknown = await runMesh(['health', addr, '--service', 'no.Such']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toEqual([`mesh: ${addr} does not know service "no.Such" (NOT_FOUND)`]);
    const closed = await runMesh(['health', `127.0.0.1:${await freePort()}`]);
    expect(closed.code).toBe(1);
    expect(closed.stderr).toHaveLength(1);
    expect(closed.stderr[0]).toMatch(/unreachable: .*ECONNREFUSED.*\(UNAVAILABLE\)$/);
    for (const bad of [['health'], ['health', 'nohost'], ['health', addr, '--timeout', 'soon'], ['health', addr, '--bogus']]) {
      const r = await runMesh(bad);
      expect({ bad, code: r.code, lines: r.stderr.length }).toEqual({ bad, code: 2, lines: 1 });
    }
  }, 60_000);

  it('Watch of an unknown service sends SERVICE_UNKNOWN and stays open', async () => {
    const { addr } = await meshServer('hs2');
    const w = watch(healthClient(addr), 'no.Such');
    let ended = false;
    void w.ended.then(() => (ended = true));
    await waitFor('SERVICE_UNKNOWN', () => w.seen.length > 0 || undefined, 5_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(w.seen.map((s) => s.status)).toEqual(['SERVICE_UNKNOWN']);
    expect(ended).toBe(false);
  }, 30_000);

  it('a drain is NOT_SERVING from its first moment: Watches hear it before the key is gone, then end; the server exits 0', async () => {
    const { proc, addr } = await meshServer('hs3');
    const key = `hs3/greeter/${addr}`;
    const w = watch(healthClient(addr), '');
    const cli = new MeshProcess(['health', addr, '--watch']);
    await waitFor('SERVING on the Watch', () => w.seen.some((s) => s.status === 'SERVING') || undefined, 5_000);
    await waitFor('mesh health --watch prints SERVING', () => cli.stdout.some((l) => l.endsWith(' SERVING')) || undefined, 10_000);
    let deletedAt = 0;
    const etcdWatch = await t.client!.watch().key(key).create();
    etcdWatch.on('delete', () => (deletedAt ||= performance.now()));
    const t0 = performance.now();
    proc.kill('SIGTERM');
    const status = await w.ended;
    const exit = await proc.exitWithin(10_000);
    await waitFor('the key deleted', () => deletedAt || undefined, 5_000);
    await etcdWatch.cancel();
    const notServingAt = w.seen.find((s) => s.status === 'NOT_SERVING')?.at ?? Infinity;
    console.log(`drain: NOT_SERVING heard ${(notServingAt - t0).toFixed(1)} ms after SIGTERM, key deleted ${(deletedAt - t0).toFixed(1)} ms after; Watch ended ${grpc.status[status.code]} "${status.details}"`);
    expect(w.seen.map((s) => s.status)).toEqual(['SERVING', 'NOT_SERVING']);
    expect(notServingAt).toBeLessThanOrEqual(deletedAt);
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(exit).toBe(0);
    // mesh health --watch printed the change, then one line why it ended, exit 1.
    expect(await cli.exitWithin(10_000)).toBe(1);
    expect(cli.stdout.map((l) => l.split(' ')[1])).toEqual(['SERVING', 'NOT_SERVING']);
    expect(cli.stderr.filter((l) => l.startsWith('mesh: '))).toHaveLength(1);
  }, 60_000);

  it('server reflection on mesh server lists helloworld.Greeter and grpc.health.v1.Health and describes them', async () => {
    const { addr } = await meshServer('hs4');
    const def = protoLoader.loadSync(path.join(REPO, 'node_modules', '@grpc', 'reflection', 'build', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto'), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    type Stream = grpc.ClientDuplexStream<object, Record<string, unknown>>;
    const Ctor = (grpc.loadPackageDefinition(def) as unknown as { grpc: { reflection: { v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & { ServerReflectionInfo(): Stream } } } } }).grpc.reflection.v1.ServerReflection;
    const client = new Ctor(addr, grpc.credentials.createInsecure());
    clients.push(client);
    const ask = (req: object) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const s = client.ServerReflectionInfo();
        s.on('data', (r: Record<string, unknown>) => {
          resolve(r);
          s.end();
        });
        s.on('error', reject);
        s.write(req);
      });
    const list = (await ask({ list_services: '*' })) as { list_services_response: { service: { name: string }[] } };
    const names = list.list_services_response.service.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['helloworld.Greeter', 'grpc.health.v1.Health']));
    const file = (await ask({ file_containing_symbol: 'helloworld.Greeter' })) as { file_descriptor_response: { file_descriptor_proto: Buffer[] } };
    expect(file.file_descriptor_response.file_descriptor_proto.length).toBeGreaterThan(0);
    expect(Buffer.concat(file.file_descriptor_response.file_descriptor_proto).toString('latin1')).toContain('SayHello');
  }, 30_000);

  it('a library server told NOT_SERVING leaves the registry and reports it; told SERVING it comes back', async () => {
    const port = await freePort();
    const addr = `127.0.0.1:${port}`;
    const key = `hs5/greeter/${addr}`;
    const flip = peerProcess(process.execPath, [path.join(REPO, 'test', 'peers', 'node', 'flip-server.js'), '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', 'hs5'], { MESH_LOG_FORMAT: 'json' });
    await flip.waitForLog('serving');
    const registered = async () => (await t.client!.get(key).string()) !== null;
    expect(await registered()).toBe(true);
    flip.kill('SIGUSR1');
    await waitFor('the key revoked', async () => !(await registered()) || undefined, 5_000);
    const down = await runMesh(['health', addr]);
    expect([down.code, down.stdout]).toEqual([1, ['NOT_SERVING']]);
    const downGreeter = await runMesh(['health', addr, '--service', 'helloworld.Greeter']);
    expect([downGreeter.code, downGreeter.stdout]).toEqual([1, ['NOT_SERVING']]);
    flip.kill('SIGUSR2');
    await waitFor('the key back', async () => (await registered()) || undefined, 5_000);
    const up = await runMesh(['health', addr]);
    expect([up.code, up.stdout]).toEqual([0, ['SERVING']]);
    // serveAndRegister drains on SIGTERM as mesh server does.
    flip.kill('SIGTERM');
    expect(await flip.exitWithin(10_000)).toBe(0);
    expect(flip.logsNamed('stopped')).toHaveLength(1);
    expect(await registered()).toBe(false);
  }, 60_000);

  it('MeshServer: setServing before start() decides where start() ends; after a drain it is refused', async () => {
    const mesh = new MeshServer({ host: '127.0.0.1', port: 0, service: 'greeter', services: ['helloworld.Greeter'] });
    mesh.setServing(false);
    await mesh.start();
    expect(mesh.state).toBe('NOT_SERVING');
    const c = healthClient(mesh.addr);
    const check = (service: string) => new Promise<string>((resolve) => c.Check({ service }, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (err, r) => resolve(err ? grpc.status[err.code] : r!.status)));
    expect([await check(''), await check('helloworld.Greeter'), await check('x')]).toEqual(['NOT_SERVING', 'NOT_SERVING', 'NOT_FOUND']);
    mesh.setServing(true);
    expect([await check(''), await check('helloworld.Greeter')]).toEqual(['SERVING', 'SERVING']);
    await mesh.shutdown('test over');
    mesh.setServing(true);
    expect(mesh.state).toBe('STOPPED');
  }, 30_000);
});
