import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { createEtcdClient } from '../core/etcd-client';
import { EtcdResolver, registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';
import { createGreeterClient, sayHello, backendOf } from '../services/greeter-client';
import { encodeEndpoint } from '../balancer/endpoint-codec';

let etcd: EtcdCluster;
let client: Etcd3;

beforeAll(async () => {
  etcd = await EtcdCluster.start(1);
  client = createEtcdClient({ endpoints: [etcd.endpoints] });
  registerEtcdResolver(client);
});

afterAll(async () => {
  await MeshProcess.killAll();
  unregisterEtcdClient();
  client?.close();
  await etcd?.stop();
});

async function startServer(prefix: string, extra: string[] = []): Promise<{ proc: MeshProcess; port: number; addr: string }> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', etcd.endpoints, '--prefix', prefix, '--ttl', '5', ...extra]);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return { proc, port, addr: `127.0.0.1:${port}` };
}

/** The resolver's deliveries, via a real grpc-js URI and a recording listener. */
function recordResolver(target: string) {
  const sets: string[][] = [];
  const errors: string[] = [];
  const uri = grpc.experimental.uriToString({ scheme: 'etcd', path: target.replace('etcd:///', '') });
  const parsed = { scheme: 'etcd', authority: '', path: target.replace('etcd:///', '') };
  const resolver = new EtcdResolver(parsed, (res) => {
    if (res.ok) sets.push(res.value.map((e) => `${e.addresses[0] && 'host' in e.addresses[0] ? e.addresses[0].host : ''}:${'port' in e.addresses[0] ? e.addresses[0].port : ''}`).sort());
    else errors.push(res.error.details);
    return true;
  }, {});
  resolver.updateResolution();
  return { sets, errors, resolver, uri, last: () => sets[sets.length - 1] };
}

describe('registration', () => {
  it('writes the Go endpoints JSON under a lease with the requested TTL', async () => {
    const { proc, addr } = await startServer('reg1', ['--ttl', '7', '--weight', '250', '--zone', 'z1']);
    const key = `reg1/greeter/${addr}`;
    const { stdout } = await etcd.etcdctl(['get', key, '-w', 'json']);
    const kv = JSON.parse(stdout).kvs[0];
    const value = JSON.parse(Buffer.from(kv.value, 'base64').toString());
    // Lease IDs are int64: read them from the raw JSON, not through a double.
    const lease = BigInt(/"lease":(\d+)/.exec(stdout)![1]);
    expect(value).toMatchObject({ Op: 0, Addr: addr });
    // Metadata is a JSON string (Go's resolver hands it to grpc-go, which panics on a map: etcd #19700), our attributes inside.
    expect(typeof value.Metadata).toBe('string');
    expect(JSON.parse(value.Metadata)).toMatchObject({ pid: proc.pid, weight: 250, zone: 'z1' });
    expect(lease).toBeGreaterThan(0n);
    const ttl = await etcd.etcdctl(['lease', 'timetolive', lease.toString(16)]);
    expect(ttl.stdout).toMatch(/granted with TTL\(7s\)/);
    proc.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
  });

  it('SIGTERM revokes the lease first: the key is gone well under a second, exit 0', async () => {
    const { proc, addr } = await startServer('reg2');
    const key = `reg2/greeter/${addr}`;
    const watcher = await client.watch().key(key).create();
    const gone = new Promise<number>((resolve) => watcher.on('delete', () => resolve(Date.now())));
    const t0 = Date.now();
    proc.kill('SIGTERM');
    const ms = (await gone) - t0;
    await watcher.cancel();
    expect(ms).toBeLessThan(1000);
    expect((await proc.exited).code).toBe(0);
    expect(proc.logs.find((l) => l.event === 'registration.revoked')).toBeTruthy();
  });

  it('a key deleted by hand is written again', async () => {
    const { proc, addr } = await startServer('reg3');
    const key = `reg3/greeter/${addr}`;
    await etcd.etcdctl(['del', key]);
    await proc.waitForLog('registration.key_restored');
    await waitFor('key back', async () => (await client.get(key).string()) !== null);
    proc.kill('SIGTERM');
    await proc.exited;
  });
});

describe('registration under interference', () => {
  it('a key overwritten by hand without our lease is written back under the lease (no ghost backend after exit)', async () => {
    const { proc, addr } = await startServer('reg4');
    const key = `reg4/greeter/${addr}`;
    await etcd.etcdctl(['put', key, encodeEndpoint(addr, { edited: true })]);
    await proc.waitForLog('registration.key_restored');
    await waitFor('key under a lease again', async () => {
      const { stdout } = await etcd.etcdctl(['get', key, '-w', 'json']);
      return /"lease":[1-9]/.test(stdout);
    });
    proc.kill('SIGTERM');
    await proc.exited;
    expect(await client.get(key).string()).toBeNull();
  });
});

describe('resolver', () => {
  it('sees servers join and leave, with a valid authority', async () => {
    expect(EtcdResolver.getDefaultAuthority({ scheme: 'etcd', authority: '', path: 'res1/greeter' })).toBe('greeter');
    const r = recordResolver('etcd:///res1/greeter');
    await waitFor('first (empty) set', () => r.sets.length >= 1);
    expect(r.last()).toEqual([]);
    const a = await startServer('res1');
    await waitFor('a joins', () => r.last()?.includes(a.addr));
    const b = await startServer('res1');
    await waitFor('b joins', () => r.last()?.length === 2);
    expect(r.last()).toEqual([a.addr, b.addr].sort());
    b.proc.kill('SIGTERM');
    await waitFor('b leaves', () => r.last()?.length === 1);
    expect(r.last()).toEqual([a.addr]);
    r.resolver.destroy();
    const n = r.sets.length;
    a.proc.kill('SIGTERM');
    await a.proc.exited;
    expect(r.sets.length).toBe(n); // nothing after destroy
    expect(r.errors).toEqual([]);
  });

  it('uses a backend written by etcdctl put --lease in the Go format; skips garbage and empty values with a warning naming the key', async () => {
    const port = await freePort();
    const bare = new MeshProcess(['server', '--port', String(port), '--no-register']);
    await bare.waitForLog('server.state', { to: 'SERVING' });
    const addr = `127.0.0.1:${port}`;
    const grant = await etcd.etcdctl(['lease', 'grant', '30']);
    const leaseId = /lease ([0-9a-f]+) granted/.exec(grant.stdout)![1];
    await etcd.etcdctl(['put', `--lease=${leaseId}`, `ext/greeter/${addr}`, encodeEndpoint(addr, null)]);
    await etcd.etcdctl(['put', 'ext/greeter/garbage', 'not json at all']);
    await etcd.etcdctl(['put', 'ext/greeter/empty', '']);
    await etcd.etcdctl(['put', 'ext/greeter/noaddr', '{"Op":0,"Metadata":{}}']);

    const r = recordResolver('etcd:///ext/greeter');
    await waitFor('resolved', () => r.last());
    expect(r.last()).toEqual([addr]);
    r.resolver.destroy();

    const load = await runMesh(['load', '--etcd', etcd.endpoints, '--prefix', 'ext', '--concurrency', '4', '--duration', '1s', '--json']);
    expect(load.code).toBe(0);
    const report = JSON.parse(load.stdout[load.stdout.length - 1]);
    expect(report.failed).toBe(0);
    expect(Object.keys(report.backends)).toEqual([addr]);
    const warned = load.logs.filter((l) => l.event === 'watcher.bad_record').map((l) => l.key).sort();
    expect(warned).toEqual(['ext/greeter/empty', 'ext/greeter/garbage', 'ext/greeter/noaddr']);
    bare.kill();
    await bare.exited;
  });
});

describe('endpoint watcher', () => {
  it('coalesces a burst of 300 registrations into a few full-set updates', async () => {
    const { EndpointWatcher } = await import('../balancer/endpoint-watcher');
    const w = new EndpointWatcher(client, 'burst/greeter/');
    const sizes: number[] = [];
    w.on('update', (snap: { endpoints: unknown[] }) => sizes.push(snap.endpoints.length));
    w.start();
    await waitFor('initial list', () => sizes.length === 1);
    await Promise.all(Array.from({ length: 300 }, (_, i) => client.put(`burst/greeter/127.0.0.1:${10000 + i}`).value(encodeEndpoint(`127.0.0.1:${10000 + i}`))));
    await waitFor('all 300 delivered', () => sizes[sizes.length - 1] === 300);
    w.close();
    console.log(`[coalescing] 300 puts -> ${sizes.length - 1} updates`);
    expect(sizes.length - 1).toBeLessThan(60);
  });
});

describe('round robin through the etcd resolver', () => {
  it('three servers share 3,000 calls evenly (max/min <= 1.1)', async () => {
    const servers = await Promise.all([startServer('rr'), startServer('rr'), startServer('rr')]);
    // round_robin by name: this is the resolver's evenness; the default policy's is test/lb-*.test.ts's.
    const greeter = createGreeterClient('etcd:///rr/greeter', undefined, { lb: 'round_robin' });
    const counts: Record<string, number> = {};
    await waitFor('all three ready', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 12; i++) seen.add(backendOf(await sayHello(greeter, 'warm', 1000)));
      return seen.size === 3;
    });
    const inFlight = 8;
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < 3000) {
          next++;
          const b = backendOf(await sayHello(greeter, 'rr', 1000));
          counts[b] = (counts[b] ?? 0) + 1;
        }
      }),
    );
    greeter.close();
    const values = Object.values(counts);
    expect(Object.keys(counts).sort()).toEqual(servers.map((s) => s.addr).sort());
    expect(values.reduce((a, b) => a + b, 0)).toBe(3000);
    expect(Math.max(...values) / Math.min(...values)).toBeLessThanOrEqual(1.1);
    for (const s of servers) s.proc.kill('SIGTERM');
    await Promise.all(servers.map((s) => s.proc.exited));
  });

  it('mesh load --json: failed=0 with all three backends', async () => {
    const servers = await Promise.all([startServer('load'), startServer('load'), startServer('load')]);
    const res = await runMesh(['load', '--etcd', etcd.endpoints, '--prefix', 'load', '--concurrency', '32', '--duration', '3s', '--json']);
    expect(res.code).toBe(0);
    const report = JSON.parse(res.stdout[res.stdout.length - 1]);
    // Every field scripts rely on (the DESIGN contract); newer ones (p99.9, mode, schedule...) may follow.
    expect(Object.keys(report)).toEqual(expect.arrayContaining(['backends', 'durationS', 'errors', 'failed', 'latencyMs', 'ok', 'requests', 'rps']));
    expect(report.failed).toBe(0);
    expect(report.ok).toBeGreaterThan(100);
    expect(Object.keys(report.backends).sort()).toEqual(servers.map((s) => s.addr).sort());
    for (const s of servers) s.proc.kill('SIGTERM');
    await Promise.all(servers.map((s) => s.proc.exited));
  });
});
