import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, REPO } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { peerProcess } from './harness/peer-process';
import { DEBIAN_PYTHON, ensurePythonGrpc } from './harness/peer-python';
import { EtcdctlRegistration } from './harness/peer-etcdctl';
import type { PeerAvailability } from './harness/peer-debian';
import { needTool } from './harness/need-tool';

/**
 * Errors and health, seen: a load client's /metrics says which backends it
 * ejects (and why) and what each backend's health check says, and the
 * dashboard, scraping that client, shows both per backend. Two mesh
 * greeters, a library server (test/peers/node/flip-server.js) that its
 * owner flips NOT_SERVING while etcdctl keeps it registered, and a C-core
 * greeter failing every call, all under one prefix.
 */

const PREFIX = 'dh';
let t: Partial<TestEtcd> = {};
let python: PeerAvailability = { ok: false, reason: 'set-up did not run' };
const registrations: EtcdctlRegistration[] = [];

beforeAll(async () => {
  python = await ensurePythonGrpc();
  t = await startTestEtcd(1);
}, 900_000);

afterAll(async () => {
  await stopTestEtcd(t, () => Promise.all(registrations.map((r) => r.close())));
});

async function registered(addr: string): Promise<void> {
  registrations.push(await EtcdctlRegistration.register(t.etcd!, `${PREFIX}/greeter/${addr}`, addr));
}

/** Prometheus text lines of `family` from http://addr/metrics. */
async function metricLines(addr: string, family: string): Promise<string[]> {
  const text = await (await fetch(`http://${addr}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(`${family}{`));
}

interface Backend {
  backend: string;
  health: Record<string, number>;
  ejectedBy: number;
}

describe('ejection and health, in metrics and on the dashboard', () => {
  it("a failing backend shows as ejected for failures, a NOT_SERVING one with its health, by the client's metrics and the dashboard", async (ctx) => {
    needTool(ctx, python, 'python3-grpcio');
    const etcd = t.etcd!.endpoints;
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      await new MeshProcess(['server', '--port', String(port), '--etcd', etcd, '--prefix', PREFIX, '--ttl', '5']).waitForLog('server.state', { to: 'SERVING' });
    }
    const flipPort = await freePort();
    const flip = peerProcess(process.execPath, [path.join(REPO, 'test', 'peers', 'node', 'flip-server.js'), '--port', String(flipPort)], { MESH_LOG_FORMAT: 'json' });
    await flip.waitForLog('serving');
    const flipAddr = `127.0.0.1:${flipPort}`;
    await registered(flipAddr);
    const brokenPort = await freePort();
    const broken = peerProcess(DEBIAN_PYTHON, ['-u', path.join(REPO, 'test', 'peers', 'greeter_server.py'), String(brokenPort), '--fail-code', 'INTERNAL', '--fail-fraction', '1']);
    await broken.waitForLog('listening');
    const brokenAddr = `127.0.0.1:${brokenPort}`;
    await registered(brokenAddr);

    const metrics = `127.0.0.1:${await freePort()}`;
    const load = new MeshProcess(['load', '--etcd', etcd, '--prefix', PREFIX, '--concurrency', '8', '--duration', '60s', '--json', '--metrics', metrics]);
    await load.waitForLog('lb.endpoint_state', { addr: brokenAddr, to: 'EJECTED' }, 15_000);
    flip.kill('SIGUSR1');
    await flip.waitForLog('health');

    // The client's own metrics.
    const ejected = await waitFor('the load to report the broken backend ejected', async () => {
      const lines = await metricLines(metrics, 'mesh_lb_backend_ejected');
      return lines.find((l) => l.includes(`backend="${brokenAddr}"`) && l.endsWith(' 1'));
    }, 10_000, 100);
    expect(ejected).toBeDefined();
    const counted = (await metricLines(metrics, 'mesh_lb_ejections_total')).filter((l) => l.includes(`backend="${brokenAddr}"`) && l.includes('reason="failures"'));
    expect(counted.length).toBe(1);
    expect(Number(counted[0].split(' ').pop())).toBeGreaterThanOrEqual(1);
    const notServing = await waitFor('the load to report the flipped backend NOT_SERVING', async () => {
      const lines = await metricLines(metrics, 'mesh_lb_backend_health');
      return lines.find((l) => l.includes(`backend="${flipAddr}"`) && l.includes('state="NOT_SERVING"') && l.endsWith(' 1'));
    }, 10_000, 100);
    expect(notServing).toBeDefined();

    // The dashboard, scraping the load client.
    const dash = new MeshProcess(['dashboard', '--etcd', etcd, '--prefix', PREFIX, '--listen', '127.0.0.1:0', '--scrape', metrics]);
    const url = await waitFor('the dashboard URL on stdout', () => dash.stdout.find((l) => /^http:\/\/127\.0\.0\.1:\d+\/$/.test(l)), 20_000);
    const seen = await waitFor('the dashboard to show both', async () => {
      const topo = (await (await fetch(`${url}api/topology`)).json()) as { traffic: { backends: Backend[] } };
      const by = new Map(topo.traffic.backends.map((b) => [b.backend, b]));
      const f = by.get(flipAddr);
      const b = by.get(brokenAddr);
      return f?.health.NOT_SERVING === 1 && b?.ejectedBy === 1 ? { f, b, all: topo.traffic.backends } : undefined;
    }, 15_000, 200);
    expect(seen.f.ejectedBy).toBe(0);
    // The healthy mesh greeters: SERVING by the one client, never ejected.
    const healthy = seen.all.filter((x) => x.backend !== flipAddr && x.backend !== brokenAddr);
    expect(healthy.length).toBe(2);
    for (const h of healthy) {
      expect(h.health).toEqual({ SERVING: 1 });
      expect(h.ejectedBy).toBe(0);
    }
    // The client dies: what it last said is not shown as if it still held.
    load.kill('SIGKILL');
    await load.exitWithin(15_000);
    await waitFor('the dashboard to stop showing the dead client\'s views', async () => {
      const topo = (await (await fetch(`${url}api/topology`)).json()) as { traffic: { backends: Backend[] } };
      return topo.traffic.backends.every((x) => x.ejectedBy === 0 && Object.keys(x.health).length === 0) ? true : undefined;
    }, 10_000, 200);
  }, 90_000);
});
