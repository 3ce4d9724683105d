import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { AdsProbe } from '../bench/xds-probe';
import { TYPE_URL } from '../services/xds-protos';
import type { XdsClientRow } from '../dashboard/dashboard-scraper';

/**
 * Connected xDS clients, seen: `mesh xds --metrics` reports each one
 * (mesh_xds_client_info: node id, user agent, what it subscribes to, the
 * version it ACKed, its last NACK), and `mesh dashboard --scrape` of that
 * /metrics lists them in /api/topology and on the page's table.
 */

let t: Partial<TestEtcd> = {};
const probes: AdsProbe[] = [];

beforeAll(async () => {
  t = await startTestEtcd(1);
});

afterAll(async () => {
  for (const p of probes) p.close();
  await stopTestEtcd(t);
});

describe('xDS clients on the dashboard', () => {
  it('lists every connected client with its subscription, ACKed version and last NACK; a client that leaves leaves the list', async () => {
    const etcd = t.etcd!.endpoints;
    const port = await freePort();
    const server = new MeshProcess(['server', '--port', String(port), '--etcd', etcd, '--ttl', '5']);
    await server.waitForLog('server.state', { to: 'SERVING' });
    const metrics = `127.0.0.1:${await freePort()}`;
    const plane = new MeshProcess(['xds', '--listen', '127.0.0.1:0', '--etcd', etcd, '--metrics', metrics]);
    const addr = await waitFor('the control plane address', () => plane.stdout[0], 15_000);

    const good = new AdsProbe(addr, { nodeId: 'good-client' });
    probes.push(good);
    good.subscribe(TYPE_URL.listener, ['greeter']);
    await good.next(TYPE_URL.listener);
    const bad = new AdsProbe(addr, { nodeId: 'picky-client', autoAck: false });
    probes.push(bad);
    bad.subscribe(TYPE_URL.cluster, ['greeter']);
    const refused = await bad.next(TYPE_URL.cluster);
    bad.nack(refused, 'cluster greeter: no thanks');

    const text = await waitFor('the plane to report both clients', async () => {
      const body = await (await fetch(`http://${metrics}/metrics`)).text();
      return body.includes('node_id="good-client"') && /node_id="picky-client"[^\n]*last_nack="CDS@\d+: cluster greeter: no thanks"/.test(body) ? body : undefined;
    }, 10_000, 100);
    expect(text).toMatch(/mesh_xds_client_info\{[^}]*node_id="good-client"[^}]*subscribed="LDS:greeter"[^}]*acked_version="LDS:\d+"/);

    const dash = new MeshProcess(['dashboard', '--etcd', etcd, '--listen', '127.0.0.1:0', '--scrape', metrics]);
    const url = await waitFor('the dashboard URL', () => dash.stdout.find((l) => /^http:\/\/127\.0\.0\.1:\d+\/$/.test(l)), 20_000);
    const rows = async () => ((await (await fetch(`${url}api/topology`)).json()) as { traffic: { xdsClients: XdsClientRow[] } }).traffic.xdsClients;
    const listed = await waitFor('the dashboard to list both', async () => {
      const r = await rows();
      return r.length === 2 ? r : undefined;
    }, 10_000, 100);
    const byNode = new Map(listed.map((r) => [r.nodeId, r]));
    expect(byNode.get('good-client')).toMatchObject({ plane: metrics, subscribed: 'LDS:greeter', lastNack: '' });
    expect(byNode.get('good-client')!.ackedVersion).toMatch(/^LDS:\d+$/);
    expect(byNode.get('picky-client')!.subscribed).toBe('CDS:greeter');
    expect(byNode.get('picky-client')!.ackedVersion).toBe('');
    expect(byNode.get('picky-client')!.lastNack).toMatch(/^CDS@\d+: cluster greeter: no thanks$/);

    bad.close();
    await waitFor('the dashboard to drop the client that left', async () => {
      const r = await rows();
      return r.length === 1 && r[0].nodeId === 'good-client';
    }, 10_000, 100);
  }, 60_000);
});
