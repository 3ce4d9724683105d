import { endpointKey } from '../balancer/endpoint-codec';
import type { RegistryObserver } from './bench-observer';
import { sleep, type BenchServer } from './bench-processes';
import type { TrafficLoop } from './bench-traffic';
import { dist, type Dist } from './bench-report';

export interface LeaveOptions {
  prefix: string;
  service: string;
  /** Registered servers in the client's rotation; each is SIGTERMed once. */
  leavers: BenchServer[];
  observer: RegistryObserver;
  loop: TrafficLoop;
}

export interface LeaveResult {
  trials: number;
  /** SIGTERM → delete event of the server's key seen on a watch here (key gone). */
  keyGoneMs: Dist;
  /** SIGTERM → the resolver's watcher delivered a set without the server. */
  resolverDeliveryMs: Dist;
  /** SIGTERM → last reply from the leaving server seen by the client (0 if none after SIGTERM). */
  lastReplyMs: Dist;
  /** SIGTERM → start of the call behind that last reply (negative: started before SIGTERM). */
  lastReplyCallStartMs: Dist;
  /** The server's own revoke RPC time, from its `registration.revoked` log. */
  revokeRpcMs: Dist;
  /** SIGTERM → process exit (revoke + drain until quiet for 200 ms + in-flight). */
  exitMs: Dist;
  nonZeroExits: number;
  failedCalls: number;
}

/**
 * Time to leave: SIGTERM a registered server under load and time (a) its key
 * disappearing from etcd, (b) the resolver delivering the smaller set, and
 * (c) the last reply from it the client sees, i.e. the last RPC routed to it.
 */
export async function benchLeave(o: LeaveOptions, progress: (s: string) => void): Promise<LeaveResult> {
  const gone: number[] = [];
  const deliv: number[] = [];
  const last: number[] = [];
  const lastStart: number[] = [];
  const revoke: number[] = [];
  const exit: number[] = [];
  let nonZeroExits = 0;
  const failedBefore = o.loop.failed;
  for (const s of o.leavers) {
    const seen = await o.loop.firstReplyFrom(s.addr, 5_000);
    if (seen === undefined) progress(`  leave ${s.addr}: never got traffic before SIGTERM`);
  }
  for (const [i, s] of o.leavers.entries()) {
    const key = endpointKey(o.prefix, o.service, s.addr);
    await sleep(150 + Math.random() * 60);
    const t0 = performance.now();
    s.mesh.kill('SIGTERM');
    const tGone = await o.observer.seen(o.observer.deleteSeen, key, t0, 3_000);
    const tDeliv = await o.observer.seen(o.observer.removed, s.addr, t0, 3_000);
    const timer = setTimeout(() => s.mesh.kill('SIGKILL'), 8_000);
    const { code } = await s.mesh.exited;
    const tExit = performance.now();
    clearTimeout(timer);
    if (code !== 0) nonZeroExits++;
    if (tGone !== undefined) gone.push(tGone - t0);
    if (tDeliv !== undefined) deliv.push(tDeliv - t0);
    last.push(Math.max(0, (o.loop.lastReplyAt.get(s.addr) ?? t0) - t0));
    lastStart.push((o.loop.lastReplyStartedAt.get(s.addr) ?? t0) - t0);
    exit.push(tExit - t0);
    const rv = s.mesh.logs.find((l) => l.event === 'registration.revoked');
    if (rv && typeof rv.ms === 'number') revoke.push(rv.ms);
    progress(
      `  leave ${i + 1}/${o.leavers.length} ${s.addr}: key gone ${tGone === undefined ? '-' : (tGone - t0).toFixed(1)} ms, delivered ${tDeliv === undefined ? '-' : (tDeliv - t0).toFixed(1)} ms, last reply ${last[last.length - 1].toFixed(1)} ms (its call started at ${lastStart[lastStart.length - 1].toFixed(1)} ms), exit ${(tExit - t0).toFixed(0)} ms code ${code}`,
    );
  }
  return {
    trials: o.leavers.length,
    keyGoneMs: dist(gone),
    resolverDeliveryMs: dist(deliv),
    lastReplyMs: dist(last),
    lastReplyCallStartMs: dist(lastStart),
    revokeRpcMs: dist(revoke),
    exitMs: dist(exit),
    nonZeroExits,
    failedCalls: o.loop.failed - failedBefore,
  };
}
