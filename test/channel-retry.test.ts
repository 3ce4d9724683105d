import * as http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GreeterServer } from '../services/greeter-server';
import { createGreeterClient, sayHello, backendOf } from '../services/greeter-client';
import { greeterPackage, GREETER_SERVICE } from '../services/greeter-proto';
import { meshChannelOptions } from '../balancer/channel';

/**
 * A backend that dies after sending response headers: grpc-js commits the
 * attempt on headers, so its hedging cannot retry it. The mesh client's
 * UNAVAILABLE interceptor must. (Simulated with a raw HTTP/2 server that
 * answers headers and then resets the connection, as a SIGKILLed greeter
 * does mid-response.)
 */
let good: GreeterServer;
let bad: http2.Http2Server;
let badPort = 0;

beforeAll(async () => {
  good = new GreeterServer({ host: '127.0.0.1', port: 0, prefix: 'services', service: 'greeter', ttlSeconds: 5 });
  await good.start();
  bad = http2.createServer();
  bad.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    setImmediate(() => stream.session?.destroy());
  });
  await new Promise<void>((r) => bad.listen(0, '127.0.0.1', () => r()));
  badPort = (bad.address() as { port: number }).port;
});

afterAll(async () => {
  await good?.shutdown('test over');
  await new Promise((r) => bad?.close(r));
});

describe('UNAVAILABLE after commit', () => {
  it('the mesh client retries calls whose backend died after sending headers; a plain hedging channel does not', async () => {
    const target = `ipv4:127.0.0.1:${badPort},${good.addr}`;
    const mesh = createGreeterClient(target);
    const replies: string[] = [];
    for (let i = 0; i < 20; i++) replies.push(await sayHello(mesh, 'r', 2000));
    mesh.close();
    expect(replies.map(backendOf).every((b) => b === good.addr)).toBe(true);

    // Control: the same channel options without the interceptor lose some calls.
    const { Greeter } = greeterPackage();
    const plain = new Greeter(target, grpc.credentials.createInsecure(), meshChannelOptions({ idempotentServices: [GREETER_SERVICE] }));
    let failed = 0;
    for (let i = 0; i < 20; i++) await sayHello(plain, 'r', 2000).catch(() => failed++);
    plain.close();
    expect(failed).toBeGreaterThan(0);
  });
});

/**
 * Streams a client resets (every cancelled call, every losing hedge) count
 * against the server's nghttp2 rapid-reset limit (CVE-2023-44487's
 * mitigation: a burst of 1,000, then about 33 a second); past it the server
 * closes the whole HTTP/2 session and every call on it fails INTERNAL
 * ("Session closed with error code 2"). A tryout saw bursts of such
 * failures every 30-40 s under a steady hedged load. Here a client cancels
 * about 2,000 calls a second on one connection while it makes ordinary
 * calls: the plain channel loses some, the mesh client none. Cancelled
 * calls report CANCELLED to their callbacks.
 */
describe('a session closed by the server for too many stream resets', () => {
  type Tally = { ok: number; cancelled: number; failed: string[] };
  /** Calls for at least `minMs`, then until `enough` holds (at most `capMs`): on a busy machine fewer calls finish per second. */
  async function run(client: InstanceType<ReturnType<typeof greeterPackage>['Greeter']>, minMs: number, enough: (r: Tally) => boolean, capMs = 15_000): Promise<Tally> {
    const r: Tally = { ok: 0, cancelled: 0, failed: [] };
    const pending: Promise<void>[] = [];
    const one = (cancel: boolean) =>
      pending.push(
        new Promise<void>((resolve) => {
          const call = client.sayHello({ name: 'rst' }, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err: grpc.ServiceError | null) => {
            if (!err) r.ok++;
            else if (err.code === grpc.status.CANCELLED) r.cancelled++;
            else r.failed.push(`${err.code} ${err.details}`);
            resolve();
          });
          if (cancel) setImmediate(() => call.cancel());
        }),
      );
    const t0 = Date.now();
    while (Date.now() - t0 < minMs || (!enough(r) && Date.now() - t0 < capMs)) {
      for (let i = 0; i < 20; i++) one(true);
      for (let i = 0; i < 5; i++) one(false);
      await new Promise((res) => setTimeout(res, 10));
    }
    await Promise.all(pending);
    return r;
  }

  it('the plain channel loses calls (INTERNAL); the mesh client retries them and reports each cancel', async () => {
    const target = `ipv4:${good.addr}`;
    const { Greeter } = greeterPackage();
    const plain = new Greeter(target, grpc.credentials.createInsecure(), meshChannelOptions({ idempotentServices: [GREETER_SERVICE] }));
    const p = await run(plain, 2_500, (r) => r.failed.length > 0);
    plain.close();
    expect(p.failed.length).toBeGreaterThan(0);
    expect(p.failed[0]).toMatch(/^13 .*Session closed with error code 2/);

    const mesh = createGreeterClient(target);
    const m = await run(mesh, 2_500, (r) => r.ok > 500 && r.cancelled > 1_000);
    mesh.close();
    expect(m.failed).toEqual([]);
    expect(m.ok).toBeGreaterThan(500);
    expect(m.cancelled).toBeGreaterThan(1_000);
  });
});
