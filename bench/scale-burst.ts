import type { Etcd3 } from 'etcd3';
import { LocalEtcdCluster } from '../demo/etcd-local';
import { createEtcdClient } from '../core/etcd-client';
import { encodeEndpoint, servicePrefix } from '../balancer/endpoint-codec';
import type { BurstMark } from './scale-burst-resolvers';
import { FleetProcess } from './scale-fleet-process';
import { epochNow, median, round } from './bench-report';
import { sleep } from './bench-processes';

export interface BurstOptions {
  /** Registrations per burst (1,000 in the issue). */
  registrations: number;
  /** Resolver counts to measure, each in a fresh process (e.g. [1, 50]). */
  resolverCounts: number[];
  /** Resolvers per etcd client in that process. */
  perClient: number;
  /** Quiet time after a burst's sets are exact, before the counters are read (late deliveries count), ms. */
  settleMs: number;
  /** Rounds per resolver count; each round runs the old coalescing and the current one, alternating which goes first. */
  rounds: number;
}

/** `immediate`: the coalescing before the lull and the cap (IMMEDIATE_COALESCE); `default`: the current one. */
export type BurstMode = 'immediate' | 'default';

export interface BurstFigures {
  /** Burst written (first write issued) → every resolver's set exact, ms. */
  exactMs: number;
  /** Sets built and handed over per resolver for the burst. */
  rebuildsPerResolver: number;
  deliveriesPerResolver: number;
  /** The resolver process's CPU over the burst (to exact, plus the settle), ms; and per resolver. */
  cpuMs: number;
  cpuMsPerResolver: number;
  /** The writer's own time for the burst (issued → every write acknowledged), ms. */
  writeMs: number;
}

export interface BurstRun {
  resolvers: number;
  mode: BurstMode;
  /** One transaction of N puts. */
  txn: BurstFigures;
  /** N separate puts, all issued at once. */
  puts: BurstFigures;
  /** The registry emptied between the bursts (one lease revoked): rebuilds, and empty sets handed over (must be 0). */
  emptiedRebuilds: number;
  emptyDeliveries: number;
  /** Resolvers not exact at the end of a burst (must be 0). */
  wrong: number;
}

export interface BurstSummary {
  resolvers: number;
  mode: BurstMode;
  /** Medians over the rounds. */
  txnRebuilds: number;
  txnDeliveries: number;
  txnCpuMs: number;
  txnExactMs: number;
  putsRebuilds: number;
  putsDeliveries: number;
  putsCpuMs: number;
  putsExactMs: number;
  putsWriteMs: number;
  /** Over every round: empty sets handed over after a full one, resolvers not exact. */
  emptyDeliveries: number;
  wrong: number;
}

export interface BurstResult {
  registrations: number;
  runs: BurstRun[];
  summary: BurstSummary[];
}

const addrOf = (net: number, i: number) => `${net}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;

/**
 * Item 3 of the resolver issue: what a burst of N registrations costs the
 * resolvers of one process. On an etcd of its own (one member, `--max-txn-ops`
 * raised so N puts fit one transaction): R resolvers (EtcdResolver, each its
 * own Get and watch) on an empty registry; then N puts in one transaction;
 * the lease under them revoked (the registry empties: held back); then N
 * separate puts issued at once. Per burst: sets rebuilt and handed over per
 * resolver, the resolver process's CPU, time until every set is exact.
 */
export async function benchBurst(o: BurstOptions, progress: (s: string) => void): Promise<BurstResult> {
  const etcd = await LocalEtcdCluster.start(1, ['--max-txn-ops', String(Math.max(128, o.registrations)), '--max-request-bytes', String(8 * 1024 * 1024)]);
  const writer: Etcd3 = createEtcdClient({ endpoints: etcd.endpoints.split(',') });
  const runs: BurstRun[] = [];
  try {
    for (const count of o.resolverCounts) {
      for (let round_ = 0; round_ < o.rounds; round_++) {
        const modes: BurstMode[] = round_ % 2 ? ['default', 'immediate'] : ['immediate', 'default'];
        for (const mode of modes) runs.push(await burstRun(o, etcd, writer, count, mode, `burst${count}${mode[0]}${round_}`, progress));
      }
    }
    const summary: BurstSummary[] = [];
    for (const count of o.resolverCounts) {
      for (const mode of ['immediate', 'default'] as const) {
        const rs = runs.filter((r) => r.resolvers === count && r.mode === mode);
        const m = (f: (r: BurstRun) => number) => round(median(rs.map(f)), 2);
        summary.push({
          resolvers: count,
          mode,
          txnRebuilds: m((r) => r.txn.rebuildsPerResolver),
          txnDeliveries: m((r) => r.txn.deliveriesPerResolver),
          txnCpuMs: m((r) => r.txn.cpuMs),
          txnExactMs: m((r) => r.txn.exactMs),
          putsRebuilds: m((r) => r.puts.rebuildsPerResolver),
          putsDeliveries: m((r) => r.puts.deliveriesPerResolver),
          putsCpuMs: m((r) => r.puts.cpuMs),
          putsExactMs: m((r) => r.puts.exactMs),
          putsWriteMs: m((r) => r.puts.writeMs),
          emptyDeliveries: rs.reduce((a, r) => a + r.emptyDeliveries, 0),
          wrong: rs.reduce((a, r) => a + r.wrong, 0),
        });
      }
    }
    return { registrations: o.registrations, runs, summary };
  } finally {
    writer.close();
    await etcd.stop();
  }
}

async function burstRun(o: BurstOptions, etcd: LocalEtcdCluster, writer: Etcd3, count: number, mode: BurstMode, prefix: string, progress: (s: string) => void): Promise<BurstRun> {
  const keyPrefix = servicePrefix(prefix, 'greeter');
  const proc = new FleetProcess('scale-burst-resolvers.js');
  try {
    await proc.call({ cmd: 'open', endpoints: etcd.endpoints.split(','), path: `${prefix}/greeter`, count, perClient: o.perClient, coalesce: mode }, 120_000);
    await sleep(300);
    const burst = async (addrs: string[], write: () => Promise<unknown>): Promise<BurstFigures & { wrong: number; endMark: BurstMark }> => {
      const m0 = await proc.call<BurstMark>({ cmd: 'mark' });
      const t0 = epochNow();
      await write();
      const writeMs = epochNow() - t0;
      const w = await proc.call<{ ok: boolean; mark: BurstMark; wrong: number }>({ cmd: 'wait', expected: addrs, timeoutMs: 60_000 }, 90_000);
      await sleep(o.settleMs);
      const m1 = await proc.call<BurstMark>({ cmd: 'mark' });
      return {
        exactMs: round(w.mark.t - t0, 0),
        rebuildsPerResolver: round((m1.rebuilds - m0.rebuilds) / count, 2),
        deliveriesPerResolver: round((m1.deliveries - m0.deliveries) / count, 2),
        cpuMs: round(m1.cpuMs - m0.cpuMs, 0),
        cpuMsPerResolver: round((m1.cpuMs - m0.cpuMs) / count, 1),
        writeMs: round(writeMs, 0),
        wrong: w.wrong,
        endMark: m1,
      };
    };
    const a = Array.from({ length: o.registrations }, (_, i) => addrOf(13, i));
    const b = Array.from({ length: o.registrations }, (_, i) => addrOf(14, i));
    const leaseA = writer.lease(300);
    const idA = await leaseA.grant();
    const txn = await burst(a, () =>
      writer
        .if(`${keyPrefix}.bench-never`, 'Version', '==', 0)
        .then(...a.map((addr) => writer.put(`${keyPrefix}${addr}`).value(encodeEndpoint(addr, { weight: 1 })).lease(idA)))
        .commit(),
    );
    // Empty the registry (one revision, one watch response): every resolver holds its set back.
    const e0 = await proc.call<BurstMark>({ cmd: 'mark' });
    await leaseA.revoke();
    await sleep(o.settleMs);
    const e1 = await proc.call<BurstMark>({ cmd: 'mark' });
    const leaseB = writer.lease(300);
    const idB = await leaseB.grant();
    const puts = await burst(b, () => Promise.all(b.map((addr) => writer.put(`${keyPrefix}${addr}`).value(encodeEndpoint(addr, { weight: 1 })).lease(idB).exec())));
    await leaseB.revoke().catch(() => undefined);
    const run: BurstRun = {
      resolvers: count,
      mode,
      txn: strip(txn),
      puts: strip(puts),
      emptiedRebuilds: round((e1.rebuilds - e0.rebuilds) / count, 2),
      emptyDeliveries: puts.endMark.empties,
      wrong: txn.wrong + puts.wrong,
    };
    progress(
      `  burst, ${count} resolver(s) in one process, ${mode} coalescing: ${o.registrations} puts in one txn → ${run.txn.rebuildsPerResolver} rebuilds, ${run.txn.deliveriesPerResolver} deliveries per resolver, CPU ${run.txn.cpuMs} ms, exact after ${run.txn.exactMs} ms; ` +
        `${o.registrations} separate puts (written in ${run.puts.writeMs} ms) → ${run.puts.rebuildsPerResolver} rebuilds, ${run.puts.deliveriesPerResolver} deliveries, CPU ${run.puts.cpuMs} ms, exact after ${run.puts.exactMs} ms; ` +
        `emptied: ${run.emptiedRebuilds} rebuilds, ${run.emptyDeliveries} empty sets handed over; ${run.wrong} wrong`,
    );
    return run;
  } finally {
    await proc.stop();
    await writer.delete().prefix(keyPrefix).exec().catch(() => undefined);
  }
}

function strip(f: BurstFigures & { wrong: number; endMark: BurstMark }): BurstFigures {
  const { wrong: _w, endMark: _m, ...rest } = f;
  return rest;
}
