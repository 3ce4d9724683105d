import { endpointKey } from '../balancer/endpoint-codec';
import type { RegistryObserver } from './bench-observer';
import { sleep, type BenchServer } from './bench-processes';
import type { TrafficLoop } from './bench-traffic';
import { distOf, type Dist } from './bench-report';

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

/** One trial: ms after SIGTERM (undefined: not seen within 3 s), `revoke` the server's own figure, and its exit code. */
type LeaveTrial = { gone?: number; deliv?: number; last: number; lastStart: number; exit: number; revoke?: number; code: number | null };

/**
 * Time to leave: SIGTERM a registered server under load and time (a) its key
 * disappearing from etcd, (b) the resolver delivering the smaller set, and
 * (c) the last reply from it the client sees, i.e. the last RPC routed to it.
 */
export async function benchLeave(o: LeaveOptions, progress: (s: string) => void): Promise<LeaveResult> {
  const failedCalls = o.loop.failedFromNow();
  for (const s of o.leavers) {
    const seen = await o.loop.firstReplyFrom(s.addr, 5_000);
    if (seen === undefined) progress(`  leave ${s.addr}: never got traffic before SIGTERM`);
  }
  const trials: LeaveTrial[] = [];
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
    const rv = s.mesh.logs.find((l) => l.event === 'registration.revoked');
    const t: LeaveTrial = {
      gone: tGone === undefined ? undefined : tGone - t0,
      deliv: tDeliv === undefined ? undefined : tDeliv - t0,
      last: Math.max(0, (o.loop.lastReplyAt.get(s.addr) ?? t0) - t0),
      lastStart: (o.loop.lastReplyStartedAt.get(s.addr) ?? t0) - t0,
      exit: tExit - t0,
      revoke: rv && typeof rv.ms === 'number' ? rv.ms : undefined,
      code,
    };
    trials.push(t);
    progress(
      `  leave ${i + 1}/${o.leavers.length} ${s.addr}: key gone ${t.gone === undefined ? '-' : t.gone.toFixed(1)} ms, delivered ${t.deliv === undefined ? '-' : t.deliv.toFixed(1)} ms, last reply ${t.last.toFixed(1)} ms (its call started at ${t.lastStart.toFixed(1)} ms), exit ${t.exit.toFixed(0)} ms code ${code}`,
    );
  }
  return {
    trials: o.leavers.length,
    keyGoneMs: distOf(trials, 'gone'),
    resolverDeliveryMs: distOf(trials, 'deliv'),
    lastReplyMs: distOf(trials, 'last'),
    lastReplyCallStartMs: distOf(trials, 'lastStart'),
    revokeRpcMs: distOf(trials, 'revoke'),
    exitMs: distOf(trials, 'exit'),
    nonZeroExits: trials.filter((t) => t.code !== 0).length,
    failedCalls: failedCalls(),
  };
}
