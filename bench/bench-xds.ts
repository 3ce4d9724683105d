import { existsSync } from 'node:fs';
import type { Etcd3 } from 'etcd3';
import { MeshProcess } from '../demo/mesh-process';
import { freePort } from '../demo/free-port';
import { encodeEndpoint, endpointKey } from '../balancer/endpoint-codec';
import { TYPE_URL } from '../services/xds-protos';
import { AdsProbe, type ProbeResponse } from './xds-probe';
import { dist, round, type Dist } from './bench-report';

/**
 * The `mesh xds` stage: a real `mesh xds` process over a registry service
 * of `endpoints` endpoints, measured from outside with bare ADS clients
 * (bench/xds-probe.ts), each on a connection of its own.
 *
 * - push latency: from just before an etcd put (one endpoint's weight
 *   changed) to its ClusterLoadAssignment arriving at a client, etcd's
 *   commit included; `changes` changes spaced `gapMs` apart, with one
 *   client, then again with `clients` clients subscribed (latency to the
 *   last of them);
 * - memory per connected client: the control plane's RSS and V8 heap (its
 *   own /metrics) with `clients` ADS clients subscribed to every type,
 *   minus before, over `clients`;
 * - churn: `churnPerSecond` writes a second for `churnSeconds` into the
 *   service, 10 clients subscribed; pushes per client, and how long after
 *   the churn the clients hold the final state.
 */

export interface XdsBenchOptions {
  /** etcd endpoints, `host:port,...`. */
  etcd: string;
  /** A registry prefix of the stage's own. */
  prefix: string;
  endpoints: number;
  changes: number;
  gapMs: number;
  clients: number;
  churnPerSecond: number;
  churnSeconds: number;
}

export interface XdsBenchResult {
  endpoints: number;
  /** Single client, ms, from just before the put (etcd's commit included). */
  pushLatency: Dist;
  /** The same pushes from the put's answer (etcd's commit left out), ms. */
  pushLatencyAfterCommit: Dist;
  /** With `clients` subscribed: to the last client to get each change, ms (the bench's own event loop, decoding every client's copy, is in it). */
  pushLatencyFanout: Dist;
  /** With `clients` subscribed, as the plane counts it (change seen to push written): share of pushes within 25 ms and 100 ms. */
  serverPushesWithin25ms: number;
  serverPushesWithin100ms: number;
  /** CPU seconds the plane spent per change during the fan-out phase (all clients' pushes). */
  planeCpuMsPerChange: number;
  clients: number;
  rssBytesPerClient: number;
  heapBytesPerClient: number;
  /** RSS of the control plane serving the service to nobody, then to `clients`. */
  rssIdleBytes: number;
  rssLoadedBytes: number;
  /** Size of the ClusterLoadAssignment on the wire. */
  assignmentBytes: number;
  /** 10 clients: pushes each got, and how long after the last write they all held the final state. */
  churn: { writes: number; writesPerSecond: number; pushesPerClient: number; settleMs: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Cumulative bucket counts of the plane's EDS push latency histogram, by upper bound (s). */
function edsBuckets(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of text.matchAll(/^mesh_xds_push_latency_seconds_bucket\{le="([^"]+)",type="EDS"\} (\d+)$/gm)) out.set(m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2]));
  return out;
}

/** Share of the pushes between two scrapes that the plane wrote within `boundS` of the change reaching it. */
function shareWithin(before: Map<number, number>, after: Map<number, number>, boundS: number): number {
  const n = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  return n ? ((after.get(boundS) ?? 0) - (before.get(boundS) ?? 0)) / n : NaN;
}

/** One gauge from Prometheus text. */
function gauge(text: string, name: string): number {
  const m = new RegExp(`^${name} ([0-9.e+]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

async function memory(metricsAddr: string): Promise<{ rss: number; heap: number }> {
  // Median of 5 scrapes over a second: the heap moves with every allocation burst.
  const rss: number[] = [];
  const heap: number[] = [];
  for (let i = 0; i < 5; i++) {
    const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
    rss.push(gauge(text, 'process_resident_memory_bytes'));
    heap.push(gauge(text, 'nodejs_heap_size_used_bytes'));
    await sleep(200);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  return { rss: med(rss), heap: med(heap) };
}

/** Weight of endpoint `i` in the state a put produced. */
function weightIn(r: ProbeResponse, addr: string): number | undefined {
  const [ip, port] = addr.split(':');
  for (const l of ((r.decoded[0] as { endpoints?: unknown[] })?.endpoints ?? []) as { lb_endpoints: { endpoint: { address: { socket_address: { address: string; port_value: number } } }; load_balancing_weight: { value: number } }[] }[]) {
    for (const e of l.lb_endpoints) if (e.endpoint.address.socket_address.address === ip && e.endpoint.address.socket_address.port_value === Number(port)) return e.load_balancing_weight.value;
  }
  return undefined;
}

export async function benchXds(etcd: Etcd3, o: XdsBenchOptions, progress: (s: string) => void): Promise<XdsBenchResult> {
  const service = 'big';
  const addr = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:9000`;
  const put = async (i: number, weight: number) => (await etcd.put(endpointKey(o.prefix, service, addr(i))).value(encodeEndpoint(addr(i), { weight }))).header.revision;
  for (let i = 0; i < o.endpoints; i += 100) await Promise.all(Array.from({ length: Math.min(100, o.endpoints - i) }, (_, j) => put(i + j, 100)));
  const metrics = `127.0.0.1:${await freePort()}`;
  const plane = new MeshProcess(['xds', '--listen', '127.0.0.1:0', '--etcd', o.etcd, '--prefix', o.prefix, '--metrics', metrics], { MESH_LOG_LEVEL: 'warn' });
  const probes: AdsProbe[] = [];
  try {
    const start = Date.now();
    while (!plane.stdout[0]) {
      if (!plane.running || Date.now() - start > 15_000) throw new Error(`mesh xds did not start: ${plane.stderr.slice(-3).join('\n')}`);
      await sleep(25);
    }
    const address = plane.stdout[0];
    const subscribe = (p: AdsProbe) => {
      for (const type of [TYPE_URL.listener, TYPE_URL.cluster]) p.subscribe(type, []);
      for (const type of [TYPE_URL.route, TYPE_URL.endpoint]) p.subscribe(type, [service]);
    };
    const first = new AdsProbe(address, { nodeId: 'bench-0' });
    probes.push(first);
    subscribe(first);
    const initial = await first.next(TYPE_URL.endpoint, () => true, 10_000);
    const assignmentBytes = initial.resources[0]?.value.length ?? 0;
    progress(`  xds: ${o.endpoints} endpoints (${(assignmentBytes / 1024).toFixed(1)} KiB ClusterLoadAssignment); ${o.changes} changes ${o.gapMs} ms apart, one client`);

    let w = 100;
    const measure = async (clients: AdsProbe[]): Promise<{ fromPut: number[]; fromCommit: number[] }> => {
      const out: number[] = [];
      const fromCommit: number[] = [];
      for (let k = 0; k < o.changes; k++) {
        const i = (k * 7919) % o.endpoints;
        const weight = (w = (w % 999) + 1);
        const after = clients.map((c) => c.responses.length);
        const t0 = performance.now();
        const rev = BigInt(await put(i, weight));
        const t1 = performance.now();
        // version_info is the etcd revision of the state sent: at or past the put's, the change is in it.
        const got = await Promise.all(clients.map((c, j) => c.next(TYPE_URL.endpoint, (r) => BigInt(r.version_info) >= rev, 5_000, after[j])));
        if (weightIn(got[0], addr(i)) !== weight) throw new Error(`version ${got[0].version_info} does not hold the change of revision ${rev}`);
        out.push(Math.max(...got.map((r) => r.at)) - t0);
        fromCommit.push(Math.max(...got.map((r) => r.at)) - t1);
        await sleep(o.gapMs);
      }
      return { fromPut: out, fromCommit };
    };
    const single = await measure([first]);

    const idle = await memory(metrics);
    progress(`  xds: connecting ${o.clients} ADS clients, each on its own connection`);
    for (let i = 1; i < o.clients; i++) {
      const p = new AdsProbe(address, { nodeId: `bench-${i}` });
      probes.push(p);
      subscribe(p);
    }
    await Promise.all(probes.map((p) => p.next(TYPE_URL.endpoint, () => true, 20_000)));
    await sleep(1_000);
    const loaded = await memory(metrics);
    progress(`  xds: ${o.changes} changes with ${o.clients} clients subscribed`);
    const scrape = async () => (await fetch(`http://${metrics}/metrics`)).text();
    const s0 = await scrape();
    const fanout = await measure(probes);
    const s1 = await scrape();
    const cpuMs = (gauge(s1, 'process_cpu_seconds_total') - gauge(s0, 'process_cpu_seconds_total')) * 1000;
    // Churn with 10 clients: the bench process itself cannot decode 100 copies of every push at 20 pushes a second.
    for (const p of probes.splice(10)) p.close();

    progress(`  xds: churn, ${o.churnPerSecond} writes/s for ${o.churnSeconds} s into the ${o.endpoints}-endpoint service`);
    const before = probes.map((p) => p.of(TYPE_URL.endpoint).length);
    const t0 = performance.now();
    const ms = o.churnSeconds * 1000;
    let writes = 0;
    const final = new Map<number, number>();
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (performance.now() - t0 < ms) {
        const due = t0 + (writes * 1000) / o.churnPerSecond;
        if (performance.now() < due) await sleep(due - performance.now());
        const n = writes++;
        const i = (n * 7) % o.endpoints;
        const weight = 1 + ((n * 13 + Math.floor(n / o.endpoints) * 500) % 1000);
        final.set(i, weight);
        await put(i, weight);
      }
    }));
    const churnEnd = performance.now();
    const lastRev = BigInt((await etcd.get(endpointKey(o.prefix, service, addr(0))).exec()).header.revision);
    const settled = await Promise.all(probes.map((p, j) => p.next(TYPE_URL.endpoint, (r) => BigInt(r.version_info) >= lastRev, 10_000, before[j])));
    const finalState = settled[0];
    for (const [i, weight] of final) if (weightIn(finalState, addr(i)) !== weight) throw new Error(`final state: endpoint ${addr(i)} has weight ${weightIn(finalState, addr(i))}, not ${weight}`);
    const pushes = probes.map((p, j) => p.of(TYPE_URL.endpoint).length - before[j]);
    return {
      endpoints: o.endpoints,
      pushLatency: dist(single.fromPut),
      pushLatencyAfterCommit: dist(single.fromCommit),
      pushLatencyFanout: dist(fanout.fromPut),
      serverPushesWithin25ms: round(shareWithin(edsBuckets(s0), edsBuckets(s1), 0.025), 3),
      serverPushesWithin100ms: round(shareWithin(edsBuckets(s0), edsBuckets(s1), 0.1), 3),
      planeCpuMsPerChange: round(cpuMs / o.changes, 1),
      clients: o.clients,
      rssBytesPerClient: Math.round((loaded.rss - idle.rss) / (o.clients - 1)),
      heapBytesPerClient: Math.round((loaded.heap - idle.heap) / (o.clients - 1)),
      rssIdleBytes: idle.rss,
      rssLoadedBytes: loaded.rss,
      assignmentBytes,
      churn: { writes, writesPerSecond: round(writes / ((churnEnd - t0) / 1000), 0), pushesPerClient: round(pushes.reduce((a, b) => a + b, 0) / pushes.length, 1), settleMs: round(Math.max(...settled.map((r) => r.at)) - churnEnd, 0) },
    };
  } finally {
    for (const p of probes) p.close();
    await plane.stop();
  }
}

/** `node dist/bench/bench-xds.js [--quick]`: the stage alone, on a local 1-member etcd of its own. */
async function standalone(quick: boolean): Promise<void> {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { LocalEtcdCluster } = require('../demo/etcd-local') as typeof import('../demo/etcd-local');
  const { createEtcdClient } = require('../core/etcd-client') as typeof import('../core/etcd-client');
  /* eslint-enable @typescript-eslint/no-require-imports */
  // etcd's data on tmpfs where there is one, as the tests do: the stage measures the control plane, not the disk's fsync.
  if (process.env.MESH_ETCD_DATA_ROOT === undefined && existsSync('/dev/shm')) process.env.MESH_ETCD_DATA_ROOT = '/dev/shm';
  const cluster = await LocalEtcdCluster.start(1);
  const etcd = createEtcdClient({ endpoints: cluster.endpoints.split(',') });
  try {
    const r = await benchXds(etcd, { etcd: cluster.endpoints, prefix: `benchxds${process.pid}`, endpoints: 1000, changes: quick ? 50 : 200, gapMs: 100, clients: quick ? 50 : 100, churnPerSecond: 1000, churnSeconds: quick ? 3 : 10 }, (s) => process.stdout.write(`${s}\n`));
    process.stdout.write(`${JSON.stringify(r)}\n`);
  } finally {
    etcd.close();
    await cluster.stop();
  }
}

if (require.main === module) {
  process.env.MESH_LOG_LEVEL ??= 'warn';
  void standalone(process.argv.includes('--quick')).catch((err: unknown) => {
    process.stderr.write(`bench-xds: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
