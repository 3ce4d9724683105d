import type { Etcd3 } from 'etcd3';
import { encodeEndpoint, endpointKey } from '../balancer/endpoint-codec';
import type { RegistryObserver } from './bench-observer';
import { sleep, waitForServerLog, type BenchServer } from './bench-processes';
import type { TrafficLoop } from './bench-traffic';
import { distOf, epochNow, type Dist } from './bench-report';

export interface JoinOptions {
  prefix: string;
  service: string;
  /** Fresh `--no-register` servers, one per trial (never dialled before). */
  joiners: BenchServer[];
  /** A separate etcd client, standing for the joining server's own. */
  writer: Etcd3;
  leaseId: string;
  observer: RegistryObserver;
  loop: TrafficLoop;
}

export interface JoinResult {
  trials: number;
  /** Trials where no reply from the new backend came within 3 s. */
  missed: number;
  /** Put issued → first reply from the new backend (the headline figure). */
  firstReplyMs: Dist;
  /** Put issued → put acknowledged by etcd. */
  putAckMs: Dist;
  /** Put issued → put event seen on a watch in this process. */
  watchEventMs: Dist;
  /** Put issued → the resolver's watcher delivered a set containing it. */
  resolverDeliveryMs: Dist;
  /** Put issued → the new server logged its first call (`server.first_call`, its clock, 1 ms resolution). */
  serverFirstCallMs: Dist;
  /** Resolver delivery → first reply (round_robin: new subchannel, connect, first pick). */
  deliveryToFirstReplyMs: Dist;
  failedCalls: number;
}

/** One trial: ms after the put was issued (undefined: not seen in time); `delivToFirst` from the resolver's delivery on. */
type JoinTrial = { first?: number; ack: number; watch?: number; deliv?: number; delivToFirst?: number; serverFirst?: number };

/**
 * Time to traffic: with load running through the resolver, write a new
 * backend's key (Go JSON, under a lease) at t0 and time the first reply that
 * backend sends to the client. Each trial uses a server that has never been
 * dialled, so the figure includes a real connection set-up. Between trials
 * the key is deleted and the backend stopped.
 */
export async function benchJoin(o: JoinOptions, progress: (s: string) => void): Promise<JoinResult> {
  const failedCalls = o.loop.failedFromNow();
  const trials: JoinTrial[] = [];
  for (const [i, j] of o.joiners.entries()) {
    const key = endpointKey(o.prefix, o.service, j.addr);
    // Desynchronise from the watcher's 50 ms throttle window.
    await sleep(60 + Math.random() * 60);
    const t0 = performance.now();
    const t0Epoch = epochNow();
    await o.writer.put(key).value(encodeEndpoint(j.addr, { bench: 'join', trial: i })).lease(o.leaseId).exec();
    const tAck = performance.now();
    const tFirst = await o.loop.firstReplyFrom(j.addr, 3_000);
    const tWatch = await o.observer.seen(o.observer.putSeen, key, t0, 1_000);
    const tDeliv = await o.observer.seen(o.observer.added, j.addr, t0, 1_000);
    if (tFirst === undefined) progress(`  join ${i + 1}/${o.joiners.length} ${j.addr}: no reply within 3 s`);
    const fc = await waitForServerLog(j, (l) => l.event === 'server.first_call', 1_000).catch(() => undefined);
    trials.push({
      first: tFirst === undefined ? undefined : tFirst - t0,
      ack: tAck - t0,
      watch: tWatch === undefined ? undefined : tWatch - t0,
      deliv: tDeliv === undefined ? undefined : tDeliv - t0,
      delivToFirst: tFirst === undefined || tDeliv === undefined ? undefined : tFirst - tDeliv,
      serverFirst: fc && typeof fc.time === 'number' ? fc.time - t0Epoch : undefined,
    });
    // Leave again: delete the key, wait until the client stops using it, stop the server.
    await sleep(50);
    await o.writer.delete().key(key).exec();
    const end = performance.now() + 2_000;
    while (performance.now() < end && performance.now() - (o.loop.lastReplyAt.get(j.addr) ?? 0) < 150) await sleep(10);
    await j.mesh.stop(3_000);
  }
  const missed = trials.filter((t) => t.first === undefined).length;
  const r: JoinResult = {
    trials: o.joiners.length,
    missed,
    firstReplyMs: distOf(trials, 'first'),
    putAckMs: distOf(trials, 'ack'),
    watchEventMs: distOf(trials, 'watch'),
    resolverDeliveryMs: distOf(trials, 'deliv'),
    serverFirstCallMs: distOf(trials, 'serverFirst'),
    deliveryToFirstReplyMs: distOf(trials, 'delivToFirst'),
    failedCalls: failedCalls(),
  };
  progress(`  join: first reply p50 ${r.firstReplyMs.p50} ms p99 ${r.firstReplyMs.p99} ms (delivery p50 ${r.resolverDeliveryMs.p50} ms), missed ${missed}, failed calls ${r.failedCalls}`);
  return r;
}
