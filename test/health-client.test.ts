import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { GreeterServer } from '../services/greeter-server';
import { backendOf, createGreeterClient, openGreeterClient, sayHello, type GreeterClient } from '../services/greeter-client';
import { greeterPackage } from '../services/greeter-proto';
import { service as healthService } from 'grpc-health-check';
import { LeaseRegistration } from '../balancer/registration-lease';
import type { LoadReport } from '../services/load-generator';

/**
 * Client-side health checking (gRPC A17, issue 21.4), in process where the
 * timing matters: the health_check policy over load_aware and round_robin
 * gives a backend that says NOT_SERVING no calls (mid-stream or from the
 * connection's first moment), its share again when SERVING, with no failed
 * call; a backend without the health service (UNIMPLEMENTED) is healthy; a
 * Watch that fails otherwise keeps the backend out and is retried with backoff.
 */

let t: Partial<TestEtcd> = {};
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  t = await startTestEtcd(1);
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  await stopTestEtcd(t, () => MeshProcess.killAll());
});

async function greeters(n: number): Promise<GreeterServer[]> {
  const s = Array.from({ length: n }, () => new GreeterServer({ host: '127.0.0.1', port: 0, prefix: 'services', service: 'greeter', ttlSeconds: 5 }));
  await Promise.all(s.map((x) => x.start()));
  cleanups.push(() => Promise.all(s.map((x) => x.shutdown('test over'))));
  return s;
}

/** A plain grpc-js Greeter server (not a MeshServer), with `extra` services; returns its address. */
async function plainServer(extra: (server: grpc.Server) => void = () => undefined): Promise<string> {
  const server = new grpc.Server();
  let addr = '';
  server.addService(greeterPackage().Greeter.service, { SayHello: (_c: unknown, cb: grpc.sendUnaryData<{ message: string }>) => cb(null, { message: `Hello x from ${addr}` }) });
  extra(server);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  addr = `127.0.0.1:${port}`;
  cleanups.push(() => server.forceShutdown());
  return addr;
}

/** Closed-loop calls (8 in flight) recording each reply's backend and time; stop() ends them. */
function load(client: GreeterClient): { replies: { b: string; at: number }[]; failed: string[]; stop: () => Promise<void> } {
  const replies: { b: string; at: number }[] = [];
  const failed: string[] = [];
  let running = true;
  const loop = async () => {
    while (running) {
      try {
        replies.push({ b: backendOf(await sayHello(client, 'x', 1000)), at: performance.now() });
      } catch (err) {
        failed.push(String((err as Error).message));
      }
    }
  };
  const loops = Array.from({ length: 8 }, loop);
  return {
    replies,
    failed,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const countIn = (r: { b: string; at: number }[], b: string, from: number, to = Infinity) => r.filter((x) => x.b === b && x.at >= from && x.at < to).length;

describe('health_check policy (gRPC A17)', () => {
  for (const lb of ['load_aware', 'round_robin'] as const) {
    it(`${lb}: a backend turning NOT_SERVING gets no calls within 1 s, and its share again once SERVING; 0 failed`, async () => {
      const [a, b] = await greeters(2);
      const client = createGreeterClient(`ipv4:${a.addr},${b.addr}`, undefined, { lb, healthCheckConfig: { serviceName: '' } });
      cleanups.push(() => client.close());
      const l = load(client);
      await sleep(1000);
      const flipAt = performance.now();
      a.meshServer.setServing(false);
      await sleep(2000);
      const backAt = performance.now();
      a.meshServer.setServing(true);
      await sleep(1000);
      await l.stop();
      const last = Math.max(...l.replies.filter((r) => r.b === a.addr && r.at < backAt).map((r) => r.at));
      const after = countIn(l.replies, a.addr, backAt + 300);
      const total = l.replies.filter((r) => r.at >= backAt + 300).length;
      console.log(`${lb}: last reply from the NOT_SERVING backend ${(last - flipAt).toFixed(1)} ms after the flip; ${countIn(l.replies, a.addr, flipAt + 1000, backAt)} calls in [flip+1 s, SERVING); share after SERVING ${((100 * after) / total).toFixed(1)}%; failed ${l.failed.length}`);
      expect(last - flipAt).toBeLessThan(1000);
      expect(countIn(l.replies, a.addr, flipAt + 1000, backAt)).toBe(0);
      expect(after / total).toBeGreaterThan(0.25);
      expect(l.failed).toEqual([]);
    }, 30_000);
  }

  it('a backend NOT_SERVING when the client connects never gets a call; 0 failed from the first call', async () => {
    const [a, b] = await greeters(2);
    a.meshServer.setServing(false);
    const client = createGreeterClient(`ipv4:${a.addr},${b.addr}`, undefined, { healthCheckConfig: { serviceName: '' } });
    cleanups.push(() => client.close());
    const l = load(client);
    await sleep(1000);
    await l.stop();
    expect(l.replies.length).toBeGreaterThan(50);
    expect(countIn(l.replies, a.addr, 0)).toBe(0);
    expect(l.failed).toEqual([]);
  }, 30_000);

  it('a backend without the health service (UNIMPLEMENTED) is healthy, as A17 says', async () => {
    const [b] = await greeters(1);
    const plain = await plainServer();
    const client = createGreeterClient(`ipv4:${plain},${b.addr}`, undefined, { healthCheckConfig: { serviceName: '' } });
    cleanups.push(() => client.close());
    const l = load(client);
    await sleep(1000);
    await l.stop();
    expect(countIn(l.replies, plain, 0)).toBeGreaterThan(20);
    expect(l.failed).toEqual([]);
  }, 30_000);

  it('a Watch that fails otherwise keeps its backend out (A17: TRANSIENT_FAILURE) and is retried with backoff, not in a loop', async () => {
    const [b] = await greeters(1);
    let watches = 0;
    const broken = await plainServer((server) =>
      server.addService(healthService as unknown as grpc.ServiceDefinition, {
        check: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.INTERNAL, details: 'broken' }),
        watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
          watches++;
          call.emit('error', { code: grpc.status.INTERNAL, details: 'health store unreachable' });
        },
        list: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.INTERNAL }),
      }),
    );
    const client = createGreeterClient(`ipv4:${broken},${b.addr}`, undefined, { healthCheckConfig: { serviceName: '' } });
    cleanups.push(() => client.close());
    const l = load(client);
    await sleep(3000);
    await l.stop();
    console.log(`failing Watch: ${watches} attempts in 3 s (reconnect backoff 100 ms .. 1 s, full jitter)`);
    expect(countIn(l.replies, broken, 0)).toBe(0);
    expect(l.failed).toEqual([]);
    expect(watches).toBeGreaterThanOrEqual(2);
    expect(watches).toBeLessThan(60);
  }, 30_000);

  it('through the etcd resolver: a NOT_SERVING backend that stays registered gets no calls, also across a registry change (a joiner)', async () => {
    const [a, b, c] = await greeters(3);
    const register = async (addr: string) => {
      const r = new LeaseRegistration(t.client!, { prefix: 'hc7', service: 'greeter', addr, ttlSeconds: 5 });
      await r.start();
      cleanups.push(() => r.close());
    };
    await register(a.addr);
    await register(b.addr);
    const ch = openGreeterClient('etcd:///hc7/greeter', t.client!, { name: 'hc7', config: { healthCheckConfig: { serviceName: '' } } });
    cleanups.push(() => ch.close());
    const l = load(ch.greeter);
    await sleep(800);
    // Health only: the GreeterServer has no etcd of its own, so its key (ours) stays.
    const flipAt = performance.now();
    a.meshServer.setServing(false);
    await sleep(700);
    const joinAt = performance.now();
    await register(c.addr);
    await sleep(1300);
    await l.stop();
    expect(countIn(l.replies, a.addr, flipAt + 1000)).toBe(0);
    expect(countIn(l.replies, c.addr, joinAt)).toBeGreaterThan(0);
    expect(l.failed).toEqual([]);
  }, 30_000);

  it('mesh load: health checking on by default, --no-health-check turns it off', async () => {
    const [a, b] = await greeters(2);
    a.meshServer.setServing(false);
    const run = async (extra: string[]) => {
      const r = await runMesh(['load', '--target', `ipv4:${a.addr},${b.addr}`, '--concurrency', '4', '--duration', '1500ms', '--json', ...extra]);
      expect(r.code, r.stderr.slice(-3).join('\n')).toBe(0);
      return JSON.parse(r.stdout[r.stdout.length - 1]) as LoadReport;
    };
    const on = await run([]);
    expect(on.backends[a.addr] ?? 0).toBe(0);
    expect(on.failed).toBe(0);
    const off = await run(['--no-health-check']);
    expect(off.backends[a.addr] ?? 0).toBeGreaterThan(0);
    const bad = await runMesh(['load', '--target', `ipv4:${a.addr}`, '--no-health-check', '--health-service', 'x']);
    expect(bad.code).toBe(2);
  }, 60_000);
});
