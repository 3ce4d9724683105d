import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Etcd3, Lease } from 'etcd3';
import { encodeEndpoint, servicePrefix } from '../balancer/endpoint-codec';
import type { ProbeDelivery, ProbeMem } from './scale-probe';
import { FleetProcess } from './scale-fleet-process';
import { dist, epochNow, round, type Dist } from './bench-report';
import { sleep } from './bench-processes';

export interface ScaleOptions {
  etcdEndpoints: string[];
  /** Writer (the bench's own etcd client). */
  client: Etcd3;
  prefix: string;
  service: string;
  /** Set sizes to time a new resolver's first set at, ascending (e.g. 1000, 10000). */
  sizes: number[];
  firstSetTrials: number;
  churnPerSecond: number;
  churnSeconds: number;
  leases: number;
}

export interface FirstSetResult {
  endpoints: number;
  /** New resolver on a new etcd client → first set handed over. */
  ms: Dist;
  /** Endpoints in that first set (should equal `endpoints`). */
  count: number;
}

export interface ChurnResult {
  setSize: number;
  targetPerSecond: number;
  seconds: number;
  /** Registrations + deletions acknowledged by etcd. */
  events: number;
  achievedPerSecond: number;
  /** Resolver deliveries during the churn (and the settle time after it). */
  deliveries: number;
  eventsPerDelivery: number;
  /** Event issued by the writer → a set reflecting it handed to grpc-js. */
  lagMs: Dist;
  /** Same, from the writer's acknowledgement (can be negative: the watch may beat the ack). */
  lagFromAckMs: Dist;
  /** The writer's put/delete round trip (issued → acknowledged): etcd's share of the lag. */
  writeRttMs: Dist;
  /** Events never reflected in a delivered set. */
  lost: number;
  /** Writes that failed. */
  writeErrors: number;
  /** The probe's CPU time during churn, ms per wall second (resolver, etcd client, and the recording listener)... */
  probeCpuMsPerS: number;
  /** ...of which the bench's recording listener (diffing each 10k set), ms per wall second. */
  recordingMsPerS: number;
  /** Event-loop delay (perf_hooks, 5 ms resolution) in the resolver's process and in the writer's, during churn. */
  resolverLoopDelayMs: { p50: number; p99: number; max: number };
  writerLoopDelayMs: { p50: number; p99: number; max: number };
}

export interface ScaleResult {
  firstSet: FirstSetResult[];
  churn: ChurnResult;
  /** The live resolver's process: before the resolver (etcd client created), with the set, after the churn; after a forced GC each. */
  memory: { baseline: ProbeMem; at10k: ProbeMem; afterChurn: ProbeMem; endpoints: number };
  writeMs: Record<string, number>;
}

/** Distinct registry addresses: 10.a.b.c:8080 for the base set, 11.a.b.c:8080 for churn registrations. */
function addrOf(net: number, i: number): string {
  return `${net}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;
}

function valueOf(addr: string, i: number): string {
  // Metadata like a real server's: a few fields, so the record size is realistic.
  return encodeEndpoint(addr, { weight: 1, zone: `zone-${i % 3}`, version: '0.1.0', pid: 10_000 + (i % 50_000), startedAt: '2025-01-01T00:00:00.000Z' });
}

/** The resolver's own process (scale-probe.ts), with --expose-gc for its memory figures. */
const newProbe = () => new FleetProcess('scale-probe.js', { execArgv: ['--expose-gc'], logLevel: 'warn' });

/** Write keys [from, to) under the leases, 128 puts per transaction (etcd's default --max-txn-ops), a few transactions in flight. */
async function writeBase(client: Etcd3, keyPrefix: string, leaseIds: string[], from: number, to: number): Promise<void> {
  const batches: Array<[number, number]> = [];
  for (let i = from; i < to; i += 128) batches.push([i, Math.min(to, i + 128)]);
  let next = 0;
  const worker = async () => {
    while (next < batches.length) {
      const [a, b] = batches[next++];
      const ops = [];
      for (let i = a; i < b; i++) {
        const addr = addrOf(10, i);
        ops.push(client.put(`${keyPrefix}${addr}`).value(valueOf(addr, i)).lease(leaseIds[i % leaseIds.length]));
      }
      // An always-true comparison on a key that never exists: an unconditional transaction.
      await client.if(`${keyPrefix}.bench-never`, 'Version', '==', 0).then(...ops).commit();
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
}

/**
 * Scale: one prefix with N registered endpoints (written from here under a
 * few leases; no servers). A new resolver's time to its first full set at
 * each size; then, with a live resolver on the largest set, a churn of
 * registrations and deletions and the lag from each write to the set that
 * reflects it; deliveries vs events; the resolver process's memory.
 */
export async function benchScale(o: ScaleOptions, progress: (s: string) => void): Promise<ScaleResult> {
  const keyPrefix = servicePrefix(o.prefix, o.service);
  const path = `${o.prefix}/${o.service}`;
  const leases: Lease[] = [];
  // First-set trials in one probe process, the live resolver in a fresh one:
  // its baseline memory is then a clean process with an etcd client, nothing else.
  let probe = newProbe();
  try {
    for (let i = 0; i < o.leases; i++) leases.push(o.client.lease(300));
    const leaseIds = await Promise.all(leases.map((l) => l.grant()));
    const firstSet: FirstSetResult[] = [];
    const writeMs: Record<string, number> = {};
    let have = 0;
    for (const size of o.sizes) {
      const t = performance.now();
      await writeBase(o.client, keyPrefix, leaseIds, have, size);
      writeMs[String(size)] = round(performance.now() - t, 1);
      progress(`  wrote ${size - have} keys (now ${size}) in ${writeMs[String(size)]} ms`);
      have = size;
      const ms: number[] = [];
      let count = 0;
      for (let i = 0; i < o.firstSetTrials; i++) {
        const r = await probe.call<{ ms: number; count: number }>({ cmd: 'first-set', endpoints: o.etcdEndpoints, path });
        ms.push(r.ms);
        count = r.count;
      }
      firstSet.push({ endpoints: size, ms: dist(ms), count });
      progress(`  first set of ${count} endpoints (new resolver, new etcd client): p50 ${dist(ms).p50} ms, max ${dist(ms).max} ms`);
    }

    // Live resolver on the largest set, in a fresh process.
    await probe.stop();
    probe = newProbe();
    const w = await probe.call<{ firstSetMs: number; count: number; before: ProbeMem; after: ProbeMem }>({ cmd: 'watch', endpoints: o.etcdEndpoints, path });
    progress(`  live resolver: ${w.count} endpoints, rss ${(w.after.rss / 2 ** 20).toFixed(1)} MB (baseline ${(w.before.rss / 2 ** 20).toFixed(1)} MB), heap used ${(w.after.heapUsed / 2 ** 20).toFixed(1)} MB`);
    await sleep(300);

    // Churn: alternately register a new endpoint and delete one of the base set, at a fixed rate.
    interface Ev {
      kind: 'put' | 'delete';
      addr: string;
      tIssue: number;
      tAck?: number;
    }
    const events: Ev[] = [];
    let writeErrors = 0;
    let inFlight = 0;
    let issued = 0;
    let puts = 0;
    let dels = 0;
    const total = Math.round(o.churnPerSecond * o.churnSeconds);
    const writerLoop = monitorEventLoopDelay({ resolution: 5 });
    writerLoop.enable();
    const start = performance.now();
    const startEpoch = epochNow();
    // Deletions take the base set first, then the oldest churn registrations
    // (added at least half the run earlier), so every event changes the set.
    const base = o.sizes[o.sizes.length - 1];
    const issue = () => {
      const isPut = issued % 2 === 0;
      const addr = isPut ? addrOf(11, puts++) : dels < base ? addrOf(10, dels++) : addrOf(11, dels++ - base);
      const ev: Ev = { kind: isPut ? 'put' : 'delete', addr, tIssue: epochNow() };
      issued++;
      inFlight++;
      const p = isPut
        ? o.client.put(`${keyPrefix}${addr}`).value(valueOf(addr, puts)).lease(leaseIds[puts % leaseIds.length]).exec()
        : o.client.delete().key(`${keyPrefix}${addr}`).exec();
      p.then(
        () => {
          ev.tAck = epochNow();
          events.push(ev);
        },
        () => writeErrors++,
      ).finally(() => inFlight--);
    };
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const elapsed = performance.now() - start;
        const due = Math.min(total, Math.floor((elapsed / 1000) * o.churnPerSecond));
        // Bounded: never more than 2 000 writes outstanding; if etcd falls behind, the achieved rate says so.
        while (issued < due && inFlight < 2_000) issue();
        if (issued >= total || elapsed > o.churnSeconds * 1000 + 5_000) {
          clearInterval(tick);
          resolve();
        }
      }, 5);
    });
    const churnWall = (performance.now() - start) / 1000;
    writerLoop.disable();
    const drainEnd = performance.now() + 10_000;
    while (inFlight > 0 && performance.now() < drainEnd) await sleep(10);
    await sleep(1_500);
    const c = await probe.call<{ deliveries: ProbeDelivery[]; mem: ProbeMem; cpuMs: number; recordMs: number; loopDelayMs: ChurnResult['resolverLoopDelayMs'] }>({ cmd: 'collect' });
    const addedAt = new Map<string, number>();
    const removedAt = new Map<string, number>();
    let deliveries = 0;
    for (const d of c.deliveries) {
      if (d.t < startEpoch) continue;
      deliveries++;
      for (const a of d.added) if (!addedAt.has(a)) addedAt.set(a, d.t);
      for (const a of d.removed) if (!removedAt.has(a)) removedAt.set(a, d.t);
    }
    const lag: number[] = [];
    const lagAck: number[] = [];
    let lost = 0;
    for (const ev of events) {
      const host = ev.addr.slice(0, ev.addr.lastIndexOf(':'));
      const t = ev.kind === 'put' ? addedAt.get(host) : removedAt.get(host);
      if (t === undefined) {
        lost++;
        continue;
      }
      lag.push(t - ev.tIssue);
      lagAck.push(t - ev.tAck!);
    }
    const churn: ChurnResult = {
      setSize: w.count,
      targetPerSecond: o.churnPerSecond,
      seconds: round(churnWall, 2),
      events: events.length,
      achievedPerSecond: round(events.length / churnWall, 1),
      deliveries,
      eventsPerDelivery: round(events.length / Math.max(1, deliveries), 1),
      lagMs: dist(lag),
      lagFromAckMs: dist(lagAck),
      writeRttMs: dist(events.map((e) => e.tAck! - e.tIssue)),
      lost,
      writeErrors,
      probeCpuMsPerS: round(c.cpuMs / (churnWall + 1.5), 1),
      recordingMsPerS: round(c.recordMs / (churnWall + 1.5), 1),
      resolverLoopDelayMs: { p50: round(c.loopDelayMs.p50), p99: round(c.loopDelayMs.p99), max: round(c.loopDelayMs.max) },
      // The histogram's samples include the 5 ms sampling interval itself.
      writerLoopDelayMs: { p50: round(Math.max(0, writerLoop.percentile(50) / 1e6 - 5)), p99: round(Math.max(0, writerLoop.percentile(99) / 1e6 - 5)), max: round(Math.max(0, writerLoop.max / 1e6 - 5)) },
    };
    progress(
      `  churn ${churn.events} events in ${churn.seconds} s (${churn.achievedPerSecond}/s) → ${deliveries} deliveries; lag p50 ${churn.lagMs.p50} ms p99 ${churn.lagMs.p99} ms max ${churn.lagMs.max} ms; lost ${lost}`,
    );
    return { firstSet, churn, memory: { baseline: w.before, at10k: w.after, afterChurn: c.mem, endpoints: w.count }, writeMs };
  } finally {
    await probe.stop();
    // Revoking the leases deletes every key written here.
    await Promise.all(leases.map((l) => l.revoke().catch(() => undefined)));
    await o.client.delete().prefix(keyPrefix).exec().catch(() => undefined);
  }
}
