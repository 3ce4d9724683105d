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
