import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { waitFor } from './harness/ports';
import { encodeEndpoint, endpointKey } from '../balancer/endpoint-codec';
import { XdsServer, type XdsServerOptions } from '../services/xds-server';
import { TYPE_URL } from '../services/xds-protos';
import type { XdsObserver } from '../services/xds-observer';
import { AdsProbe, type ProbeResponse } from '../bench/xds-probe';

/**
 * The protocol, on the wire, with a bare ADS client (bench/xds-probe.ts)
 * against an in-process `mesh xds` server on a real etcd: the resources as
 * gRPC proxyless clients need them, versions = etcd revisions, ACK/NACK,
 * subscriptions (wildcard, named, missing), replicas, etcd unreachable,
 * malformed requests, churn. Real clients are in xds-clients.test.ts.
 */

let t: Partial<TestEtcd> = {};
const servers: XdsServer[] = [];
const probes: AdsProbe[] = [];

beforeAll(async () => {
  t = await startTestEtcd(1);
});

afterAll(async () => {
  for (const p of probes) p.close();
  await Promise.all(servers.map((s) => s.close()));
  await stopTestEtcd(t);
});

/** Log lines of the servers of this file (warn and up, plus info). */
const logs: Record<string, unknown>[] = [];
const log = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });

async function startServer(prefix: string, extra: Partial<XdsServerOptions> = {}): Promise<XdsServer> {
  const s = await XdsServer.start(t.client!, { host: '127.0.0.1', port: 0, prefix, log, ...extra });
  servers.push(s);
  await waitFor('xds SERVING', () => (s.state === 'SERVING' ? true : undefined), 10_000);
  return s;
}

function probe(server: XdsServer, opts: ConstructorParameters<typeof AdsProbe>[1] = {}): AdsProbe {
  const p = new AdsProbe(server.address, opts);
  probes.push(p);
  return p;
}

async function put(prefix: string, service: string, addr: string, md: Record<string, unknown> | null = null): Promise<string> {
  const res = await t.client!.put(endpointKey(prefix, service, addr)).value(encodeEndpoint(addr, md));
  return res.header.revision;
}

/** Everything of one type the probe received last, by resource name. */
const byName = (r: ProbeResponse) => new Map(r.decoded.map((d) => [(d.name ?? d.cluster_name) as string, d]));

describe('mesh xds on the wire (ADS, state of the world)', () => {
  it('serves a Listener, RouteConfiguration, EDS Cluster and ClusterLoadAssignment per service, as gRPC proxyless clients need them; version = etcd revision', async () => {
    await put('p1', 'greeter', '127.0.0.1:7001', { weight: 100, zone: 'a' });
    await put('p1', 'greeter', '127.0.0.1:7002', { weight: 300, zone: 'a' });
    await put('p1', 'greeter', '127.0.0.1:7003', { weight: 50, zone: 'b', draining: true });
    await put('p1', 'greeter', '127.0.0.1:7006', { weight: 0, zone: 'b' }); // weight 0: the mesh's drain
    await put('p1', 'other', '127.0.0.1:7004');
    const rev = await put('p1', 'other', 'localhost:7005'); // not an IP: left out, warned
    const s = await startServer('p1');
    const p = probe(s, { nodeId: 'wire-1' });
    p.subscribe(TYPE_URL.listener, []);
    const lds = await p.next(TYPE_URL.listener);
    expect(lds.version_info).toBe(rev);
    const listener = byName(lds).get('greeter') as { api_listener: { api_listener: { type_url: string; value: Buffer } } };
    expect([...byName(lds).keys()]).toEqual(['greeter', 'other']);
    expect(listener.api_listener.api_listener.type_url).toBe('type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager');
    const hcm = (await import('../services/xds-protos')).XdsProtos.get().decodeAny(listener.api_listener.api_listener) as { rds: { route_config_name: string; config_source: { ads: unknown } }; http_filters: { name: string; typed_config: { type_url: string } }[] };
    expect(hcm.rds.route_config_name).toBe('greeter');
    expect(hcm.rds.config_source.ads).toEqual({});
    expect(hcm.http_filters.map((f) => f.typed_config.type_url)).toEqual(['type.googleapis.com/envoy.extensions.filters.http.router.v3.Router']);

    p.subscribe(TYPE_URL.route, ['greeter']);
    const rds = byName(await p.next(TYPE_URL.route)).get('greeter') as { virtual_hosts: { domains: string[]; routes: { route: { cluster: string } }[] }[] };
    expect(rds.virtual_hosts[0].domains).toEqual(['*']);
    expect(rds.virtual_hosts[0].routes[0].route.cluster).toBe('greeter');

    p.subscribe(TYPE_URL.cluster, []);
    const cds = byName(await p.next(TYPE_URL.cluster)).get('greeter') as Record<string, any>;
    expect(cds.type).toBe('EDS');
    expect(cds.lb_policy).toBe('ROUND_ROBIN');
    expect(cds.eds_cluster_config.service_name).toBe('greeter');
    expect(cds.outlier_detection.enforcing_failure_percentage.value).toBe(100);
    expect(cds.outlier_detection.failure_percentage_minimum_hosts.value).toBe(2);

    p.subscribe(TYPE_URL.endpoint, ['greeter']);
    const eds = await p.next(TYPE_URL.endpoint);
    expect(eds.version_info).toBe(rev);
    const cla = byName(eds).get('greeter') as Record<string, any>;
    const localities = cla.endpoints.map((l: any) => ({
      zone: l.locality.zone,
      weight: l.load_balancing_weight.value,
      endpoints: l.lb_endpoints.map((e: any) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value} w${e.load_balancing_weight.value} ${e.health_status}`),
    }));
    expect(localities).toEqual([
      { zone: 'a', weight: 400, endpoints: ['127.0.0.1:7001 w100 HEALTHY', '127.0.0.1:7002 w300 HEALTHY'] },
      { zone: 'b', weight: 1, endpoints: ['127.0.0.1:7003 w50 DRAINING', '127.0.0.1:7006 w1 DRAINING'] },
    ]);
    expect(logs.some((l) => l.event === 'xds.endpoint_skipped' && String(l.key).endsWith('localhost:7005'))).toBe(true);
  });

  it('ACKs are counted; a NACK is logged with the node id and the error and counted; the rejected content is not sent again until it changes', async () => {
    const seen: string[] = [];
    const observer: XdsObserver = { acked: (type) => seen.push(`ack ${type}`), nacked: (type, node, detail) => seen.push(`nack ${type} ${node} ${detail}`) };
    await put('p2', 'greeter', '127.0.0.1:7101');
    const s = await startServer('p2', { observer });
    const p = probe(s, { nodeId: 'nacker', autoAck: false });
    p.subscribe(TYPE_URL.endpoint, ['greeter']);
    const first = await p.next(TYPE_URL.endpoint);
    p.nack(first, 'endpoints[0]: not to my liking');
    await waitFor('nack counted', () => (seen.includes('nack EDS nacker endpoints[0]: not to my liking') ? true : undefined), 2_000);
    expect(logs.find((l) => l.event === 'xds.nack' && l.node === 'nacker')).toMatchObject({ type: 'EDS', version: first.version_info, error: 'endpoints[0]: not to my liking', level: 40 });
    await new Promise((r) => setTimeout(r, 300));
    expect(p.of(TYPE_URL.endpoint)).toHaveLength(1); // not resent
    const rev = await put('p2', 'greeter', '127.0.0.1:7102');
    const second = await p.next(TYPE_URL.endpoint, (r) => r.version_info === rev);
    expect(second.nonce).not.toBe(first.nonce);
    p.ack(second);
    await waitFor('ack counted', () => (seen.includes('ack EDS') ? true : undefined), 2_000);
  });

  it('sends only what a client subscribed to; a missing name is omitted (LDS/CDS: the empty state tells the client), a named subscription is not a wildcard', async () => {
    await put('p3', 'greeter', '127.0.0.1:7201');
    await put('p3', 'other', '127.0.0.1:7202');
    const s = await startServer('p3');
    const p = probe(s);
    p.subscribe(TYPE_URL.listener, ['nope']);
    expect((await p.next(TYPE_URL.listener)).resources).toEqual([]);
    p.subscribe(TYPE_URL.endpoint, ['greeter', 'missing']);
    const eds = await p.next(TYPE_URL.endpoint);
    expect([...byName(eds).keys()]).toEqual(['greeter']);
    // A change to a service nobody here subscribed to pushes nothing here.
    await put('p3', 'other', '127.0.0.1:7203');
    await new Promise((r) => setTimeout(r, 300));
    expect(p.of(TYPE_URL.endpoint)).toHaveLength(1);
    expect(p.of(TYPE_URL.listener)).toHaveLength(1);
    // A new service appears: the named LDS subscription gets nothing; a wildcard one would.
    const w = probe(s);
    w.subscribe(TYPE_URL.cluster, []);
    expect([...byName(await w.next(TYPE_URL.cluster)).keys()]).toEqual(['greeter', 'other']);
    const rev = await put('p3', 'nope', '127.0.0.1:7204');
    expect([...byName(await w.next(TYPE_URL.cluster, (r) => r.version_info === rev)).keys()]).toEqual(['greeter', 'nope', 'other']);
    expect([...byName(await p.next(TYPE_URL.listener, (r) => r.version_info === rev)).keys()]).toEqual(['nope']);
    // RDS with no names subscribes to nothing (not a wildcard).
    p.subscribe(TYPE_URL.route, []);
    expect((await p.next(TYPE_URL.route)).resources).toEqual([]);
    // A first request carrying a nonce of another stream (another replica's) is a subscription, not stale.
    const moved = probe(s);
    moved.send({ type_url: TYPE_URL.endpoint, resource_names: ['greeter'], response_nonce: '41', version_info: '12' });
    expect([...byName(await moved.next(TYPE_URL.endpoint)).keys()]).toEqual(['greeter']);
  });

  it('two replicas at the same etcd revision serve the same versions and the same bytes', async () => {
    for (let i = 0; i < 20; i++) await put('p4', 'greeter', `127.0.0.${1 + (i % 3)}:${7300 + i}`, { weight: 1 + i, zone: `z${i % 4}` });
    const [a, b] = await Promise.all([startServer('p4'), startServer('p4', { lb: 'round_robin' })]);
    const [pa, pb] = [probe(a), probe(b)];
    for (const p of [pa, pb]) for (const type of [TYPE_URL.listener, TYPE_URL.cluster]) p.subscribe(type, []);
    for (const p of [pa, pb]) for (const type of [TYPE_URL.route, TYPE_URL.endpoint]) p.subscribe(type, ['greeter']);
    for (const type of Object.values(TYPE_URL)) {
      const [ra, rb] = await Promise.all([pa.next(type), pb.next(type)]);
      expect(ra.version_info).toBe(rb.version_info);
      expect(Buffer.concat(ra.resources.map((r) => r.value)).equals(Buffer.concat(rb.resources.map((r) => r.value)))).toBe(true);
    }
  });

  it('etcd unreachable: the last state is served, to a client that connects then too; never an empty one', async () => {
    await put('p5', 'greeter', '127.0.0.1:7401');
    const s = await startServer('p5');
    const before = s.snapshot!.version;
    t.etcd!.signal(0, 'SIGSTOP');
    try {
      await new Promise((r) => setTimeout(r, 1_500));
      const p = probe(s);
      p.subscribe(TYPE_URL.endpoint, ['greeter']);
      const eds = await p.next(TYPE_URL.endpoint);
      expect(eds.version_info).toBe(before);
      expect([...byName(eds).keys()]).toEqual(['greeter']);
    } finally {
      t.etcd!.signal(0, 'SIGCONT');
    }
  });

  it('a service whose last endpoint goes is held at its last endpoints (warned), as the etcd resolver holds back an empty set; replaced when it has endpoints again', async () => {
    await put('p8', 'greeter', '127.0.0.1:7701');
    const s = await startServer('p8');
    const p = probe(s);
    p.subscribe(TYPE_URL.listener, []);
    p.subscribe(TYPE_URL.endpoint, ['greeter']);
    await p.next(TYPE_URL.endpoint);
    await t.client!.delete().key(endpointKey('p8', 'greeter', '127.0.0.1:7701'));
    await waitFor('hold-back warned', () => logs.find((l) => l.event === 'xds.service_held' && l.service === 'greeter' && l.endpoints === 1), 3_000);
    expect(p.of(TYPE_URL.endpoint)).toHaveLength(1);
    expect(p.of(TYPE_URL.listener)).toHaveLength(1);
    const rev = await put('p8', 'greeter', '127.0.0.1:7702');
    const eds = await p.next(TYPE_URL.endpoint, (r) => r.version_info === rev);
    expect(JSON.stringify(eds.decoded)).toContain('7702');
    expect(JSON.stringify(eds.decoded)).not.toContain('7701');
  });

  it('a malformed request ends that stream alone (undecodable: INTERNAL; no type_url: INVALID_ARGUMENT); delta xDS is UNIMPLEMENTED; the others are served on', async () => {
    await put('p6', 'greeter', '127.0.0.1:7501');
    const s = await startServer('p6');
    const good = probe(s);
    good.subscribe(TYPE_URL.endpoint, ['greeter']);
    await good.next(TYPE_URL.endpoint);
    // Raw bytes: field 15 with wire type 7, which protobuf does not have.
    const raw = new grpc.Client(s.address, grpc.credentials.createInsecure());
    const garbage = raw.makeBidiStreamRequest('/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources', (b: Buffer) => b, (b: Buffer) => b);
    const garbageStatus = new Promise<grpc.StatusObject>((resolve) => garbage.on('status', resolve));
    garbage.on('error', () => undefined);
    garbage.write(Buffer.from([0x7f, 0x01]));
    expect((await garbageStatus).code).toBe(grpc.status.INTERNAL);
    const noType = probe(s);
    noType.send({ resource_names: ['greeter'] });
    const st = await noType.ended;
    expect(st.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(st.details).toMatch(/type_url/);
    const v2 = probe(s);
    v2.send({ type_url: 'type.googleapis.com/envoy.api.v2.Listener' });
    expect((await v2.ended).code).toBe(grpc.status.INVALID_ARGUMENT);
    const delta = raw.makeBidiStreamRequest('/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources', (b: Buffer) => b, (b: Buffer) => b);
    const deltaStatus = new Promise<grpc.StatusObject>((resolve) => delta.on('status', resolve));
    delta.on('error', () => undefined);
    delta.write(Buffer.alloc(0));
    expect((await deltaStatus).code).toBe(grpc.status.UNIMPLEMENTED);
    raw.close();
    const rev = await put('p6', 'greeter', '127.0.0.1:7502');
    await good.next(TYPE_URL.endpoint, (r) => r.version_info === rev);
  });

  it('churn: 1,000 writes/s into a 1,000-endpoint service is coalesced; a client that ACKs late gets only newer states, never a backlog; every client ends on the final state', async () => {
    const addr = (i: number) => `10.0.${i >> 8}.${i & 255}:8000`;
    const weights = new Map<string, number>();
    await Promise.all(Array.from({ length: 1000 }, (_, i) => (weights.set(addr(i), 100), put('p7', 'big', addr(i), { weight: 100 }))));
    const s = await startServer('p7');
    const fast = probe(s);
    const slow = probe(s, { autoAck: false, onResponse: (r) => setTimeout(() => slow.ack(r), 250) });
    for (const p of [fast, slow]) p.subscribe(TYPE_URL.endpoint, ['big']);
    await Promise.all([fast.next(TYPE_URL.endpoint), slow.next(TYPE_URL.endpoint)]);
    // 2 s at 1,000 writes a second, 32 in flight: each changes one endpoint's weight.
    const t0 = performance.now();
    let writes = 0;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (performance.now() - t0 < 2_000) {
        const due = t0 + writes;
        if (performance.now() < due) await new Promise((r) => setTimeout(r, due - performance.now()));
        const n = writes++;
        const a = addr((n * 7) % 1000);
        const w = 1 + ((n * 13 + Math.floor(n / 1000) * 500) % 1000); // a new value on every pass over the keys
        weights.set(a, w);
        await put('p7', 'big', a, { weight: w });
      }
    }));
    const rate = writes / ((performance.now() - t0) / 1000);
    const expected = [...weights].sort(([a], [b]) => (a < b ? -1 : 1)).map(([a, w]) => `${a} ${w}`).join(',');
    const content = (r: ProbeResponse) => ((r.decoded[0] as any).endpoints as any[]).flatMap((l) => l.lb_endpoints.map((e: any) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value} ${e.load_balancing_weight.value}`)).sort().join(',');
    const [f, sl] = await Promise.all([fast.next(TYPE_URL.endpoint, (r) => content(r) === expected, 3_000), slow.next(TYPE_URL.endpoint, (r) => content(r) === expected, 3_000)]);
    const settle = Math.max(f.at, sl.at) - (t0 + 2_000);
    const [nf, ns] = [fast.of(TYPE_URL.endpoint).length - 1, slow.of(TYPE_URL.endpoint).length - 1];
    console.log(`xds churn: ${writes} writes (${rate.toFixed(0)}/s) into 1,000 endpoints -> ${nf} pushes to the client that ACKs at once, ${ns} to the one ACKing after 250 ms; both on the final state ${settle.toFixed(0)} ms after the churn ended`);
    expect(rate).toBeGreaterThan(500); // the writer itself shares 2 cores with etcd and the plane
    expect(nf).toBeLessThan(writes / 5);
    // One response in flight at a time: the slow client got at most one per 250 ms.
    expect(ns).toBeLessThanOrEqual(Math.ceil((sl.at - t0) / 250) + 2);
    for (const p of [fast, slow]) {
      const versions = p.of(TYPE_URL.endpoint).map((r) => BigInt(r.version_info));
      expect(versions).toEqual([...versions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    }
  }, 30_000);
});
