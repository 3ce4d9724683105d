import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { encodeEndpoint, endpointKey } from '../balancer/endpoint-codec';
import { TYPE_URL } from '../services/xds-protos';
import { AdsProbe } from '../bench/xds-probe';

/**
 * `mesh xds` as a command: usage errors (exit 2), runtime failures (exit 1),
 * each one line; --print-bootstrap; --metrics; SIGTERM.
 */

let t: Partial<TestEtcd> = {};

beforeAll(async () => {
  t = await startTestEtcd(1);
});

afterAll(async () => {
  await stopTestEtcd(t);
});

/** One stderr line that is not a JSON log line. */
const plainLines = (stderr: string[]) => stderr.filter((l) => l.trim() !== '' && !l.startsWith('{'));

describe('mesh xds, the command', () => {
  it('bad flags are one line and exit 2', async () => {
    const cases: [string[], RegExp][] = [
      [['--listen', 'nonsense'], /--listen.*not HOST:PORT/],
      [['--listen', '127.0.0.1:99999'], /not HOST:PORT/],
      [['--lb', 'weighted'], /unknown policy "weighted"; choose one of round_robin, ring_hash, least_request/],
      [['--prefix', '/'], /not a key prefix/],
      [['--node-id', 'n1'], /--node-id goes with --print-bootstrap/],
      [['--print-bootstrap', '--server-uri', 'a b'], /not a gRPC target/],
    ];
    const runs = await Promise.all(cases.map(([args]) => runMesh(['xds', '--etcd', t.etcd!.endpoints, ...args])));
    runs.forEach((r, i) => {
      expect(r.code, `${cases[i][0].join(' ')}: ${r.stderr.join('\n')}`).toBe(2);
      expect(plainLines(r.stderr)).toHaveLength(1);
      expect(plainLines(r.stderr)[0]).toMatch(cases[i][1]);
    });
  });

  it('a port taken, or etcd unreachable: one line, exit 1', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const [inUse, noEtcd] = await Promise.all([
        runMesh(['xds', '--listen', `127.0.0.1:${port}`, '--etcd', t.etcd!.endpoints]),
        runMesh(['xds', '--listen', '127.0.0.1:0', '--etcd', `127.0.0.1:${await freePort()}`, '--dial-timeout', '500ms']),
      ]);
      expect(inUse.code).toBe(1);
      expect(plainLines(inUse.stderr)).toEqual([`mesh: cannot listen on 127.0.0.1:${port}: address already in use`]);
      expect(noEtcd.code).toBe(1);
      expect(plainLines(noEtcd.stderr)).toHaveLength(1);
      expect(plainLines(noEtcd.stderr)[0]).toMatch(/^mesh: .*etcd at 127\.0\.0\.1:\d+/);
    } finally {
      taken.close();
    }
  });

  it('--print-bootstrap prints a bootstrap a client takes as is (grpc-js-xds validates it), without etcd', async () => {
    const run = await runMesh(['xds', '--print-bootstrap', '--listen', '127.0.0.1:18555', '--node-id', 'web-1', '--zone', 'eu-1a', '--etcd', `127.0.0.1:${await freePort()}`]);
    expect(run.code).toBe(0);
    const b = JSON.parse(run.stdout.join('\n')) as Record<string, unknown>;
    expect(b).toEqual({
      xds_servers: [{ server_uri: '127.0.0.1:18555', channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
      node: { id: 'web-1', cluster: 'etcd-mesh', locality: { zone: 'eu-1a' } },
    });
    const { validateBootstrapConfig } = (await import('@grpc/grpc-js-xds/build/src/xds-bootstrap')) as { validateBootstrapConfig(o: unknown): { node: { id: string } } };
    expect(validateBootstrapConfig(b).node.id).toBe('web-1');
    const other = await runMesh(['xds', '--print-bootstrap', '--server-uri', 'dns:///xds.internal:18000']);
    expect((JSON.parse(other.stdout.join('\n')) as { xds_servers: { server_uri: string }[]; node: { locality: object } }).xds_servers[0].server_uri).toBe('dns:///xds.internal:18000');
    expect((JSON.parse(other.stdout.join('\n')) as { node: { locality: object } }).node.locality).toEqual({});
  });

  it('--metrics serves mesh_xds_* (connected clients, pushes, ACKs by type, push latency); SIGTERM ends it with exit 0', async () => {
    await t.client!.put(endpointKey('services', 'greeter', '127.0.0.1:7601')).value(encodeEndpoint('127.0.0.1:7601'));
    const metrics = `127.0.0.1:${await freePort()}`;
    const proc = new MeshProcess(['xds', '--listen', '127.0.0.1:0', '--etcd', t.etcd!.endpoints, '--metrics', metrics]);
    await waitFor('address on stdout', () => (proc.stdout[0] ? true : undefined), 15_000);
    expect(proc.stdout[0]).toMatch(/^127\.0\.0\.1:\d+$/);
    const probe = new AdsProbe(proc.stdout[0], { nodeId: 'metrics-probe' });
    probe.subscribe(TYPE_URL.endpoint, ['greeter']);
    await probe.next(TYPE_URL.endpoint);
    await t.client!.put(endpointKey('services', 'greeter', '127.0.0.1:7602')).value(encodeEndpoint('127.0.0.1:7602'));
    await probe.next(TYPE_URL.endpoint, (r) => r.resources.length === 1 && JSON.stringify(r.decoded).includes('7602'));
    const scrape = async () => (await fetch(`http://${metrics}/metrics`)).text();
    const text = await waitFor('ACK counted', async () => {
      const s = await scrape();
      return /^mesh_xds_acks_total\{type="EDS"\} 2$/m.test(s) ? s : undefined;
    }, 5_000);
    expect(text).toMatch(/^mesh_xds_connected_clients 1$/m);
    expect(text).toMatch(/^mesh_xds_pushes_total\{type="EDS"\} 2$/m);
    expect(text).toMatch(/^mesh_xds_push_latency_seconds_count\{type="EDS"\} 1$/m);
    expect(text).toMatch(/^mesh_xds_resources\{type="LDS"\} 1$/m);
    expect(text).toMatch(/^mesh_xds_snapshot_revision \d+$/m);
    probe.close();
    await waitFor('client gone', async () => (/^mesh_xds_connected_clients 0$/m.test(await scrape()) ? true : undefined), 5_000);
    proc.kill('SIGTERM');
    expect(await proc.exitWithin(5_000)).toBe(0);
  });
});
