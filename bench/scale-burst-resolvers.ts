/**
 * Resolvers for the registration-burst bench (forked by bench/scale-burst.ts
 * with an IPC channel): N EtcdResolver instances built as grpc-js builds
 * them, a recording listener in place of a channel, on etcd clients shared
 * `perClient` at a time. The parent writes a burst; this process reports
 * how many sets its resolvers built and handed over for it, and the CPU the
 * process spent.
 *
 * Requests: {id, cmd: 'open' | 'mark' | 'wait' | 'stop', ...}; replies {id, result} or {id, error}.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../core/etcd-client';
import { EtcdResolver, ETCD_CLIENT_OPTION, registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';
import { SUBSET_SIZE_OPTION } from '../balancer/subset';
import { resolverDeliveryStats, setCoalesceDefaults, DEFAULT_COALESCE, IMMEDIATE_COALESCE } from '../balancer/resolver-etcd-coalesce';
import { epochNow } from './bench-report';
import { serveFleetCalls } from './scale-fleet-process';

type Endpoint = grpc.experimental.Endpoint;
type StatusOr<T> = grpc.experimental.StatusOr<T>;

interface Rec {
  resolver: EtcdResolver;
  name: string;
  /** The last set handed over, as host:port. */
  last: Endpoint[];
  deliveries: number;
  empties: number;
  lastAt: number;
}

const clients: Etcd3[] = [];
const recs: Rec[] = [];

export interface BurstMark {
  /** epoch ms */
  t: number;
  /** This process's CPU time so far, ms (user + system). */
  cpuMs: number;
  /** Sets handed to the listeners, all resolvers. */
  deliveries: number;
  /** Full-set rebuilds (resolverDeliveryStats; a held-back empty set is a rebuild, not a delivery). */
  rebuilds: number;
  empties: number;
}

function mark(): BurstMark {
  const cpu = process.cpuUsage();
  const stats = resolverDeliveryStats();
  return { t: epochNow(), cpuMs: (cpu.user + cpu.system) / 1000, deliveries: recs.reduce((s, r) => s + r.deliveries, 0), rebuilds: stats.rebuilds, empties: recs.reduce((s, r) => s + r.empties, 0) };
}

async function open(r: { endpoints: string[]; path: string; count: number; perClient: number; coalesce: 'immediate' | 'default' }): Promise<BurstMark> {
  setCoalesceDefaults(r.coalesce === 'immediate' ? IMMEDIATE_COALESCE : DEFAULT_COALESCE);
  let pending = r.count;
  let allFirst: () => void = () => undefined;
  const done = new Promise<void>((res) => (allFirst = res));
  for (let i = 0; i < r.count; i++) {
    const k = Math.floor(i / r.perClient);
    if (!clients[k]) clients[k] = createEtcdClient({ endpoints: r.endpoints });
    const name = `burst-${process.pid}-${i}`;
    registerEtcdResolver(clients[k], name);
    const rec = { name, last: [], deliveries: 0, empties: 0, lastAt: 0 } as unknown as Rec;
    const uri = { scheme: 'etcd', authority: '', path: r.path } as grpc.experimental.GrpcUri;
    rec.resolver = new EtcdResolver(
      uri,
      (result: StatusOr<Endpoint[]>) => {
        if (!result.ok) return true;
        if (rec.deliveries++ === 0 && --pending === 0) allFirst();
        if (result.value.length === 0 && rec.last.length > 0) rec.empties++;
        rec.last = result.value;
        rec.lastAt = epochNow();
        return true;
      },
      // Judged on the full set: no subsetting (the default subsets over 100).
      { [ETCD_CLIENT_OPTION]: name, [SUBSET_SIZE_OPTION]: 0 },
    );
    recs.push(rec);
    rec.resolver.updateResolution();
  }
  if (r.count === 0) allFirst();
  await done;
  return mark();
}

const addrOf = (e: Endpoint) => {
  const a = e.addresses[0] as { host: string; port: number };
  return `${a.host}:${a.port}`;
};

/**
 * Wait until every resolver's last set is exactly `expected` (checked by
 * size on every poll, by content once the sizes match); then the mark, and
 * when the last resolver's last set arrived.
 */
async function wait(r: { expected: string[]; timeoutMs: number }): Promise<{ ok: boolean; lastSetAt: number; mark: BurstMark; wrong: number }> {
  const want = new Set(r.expected);
  const end = performance.now() + r.timeoutMs;
  const exact = (rec: Rec) => rec.last.length === want.size && rec.last.every((e) => want.has(addrOf(e)));
  for (;;) {
    if (recs.every((rec) => rec.last.length === want.size) && recs.every(exact)) break;
    if (performance.now() > end) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  const m = mark();
  return { ok: recs.every(exact), lastSetAt: Math.max(...recs.map((x) => x.lastAt)), mark: m, wrong: recs.filter((x) => !exact(x)).length };
}

async function handle(req: { id: number; cmd: string; [k: string]: unknown }): Promise<unknown> {
  switch (req.cmd) {
    case 'open':
      return open(req as unknown as Parameters<typeof open>[0]);
    case 'mark':
      return mark();
    case 'wait':
      return wait(req as unknown as Parameters<typeof wait>[0]);
    case 'stop':
      for (const r of recs) {
        r.resolver.destroy();
        unregisterEtcdClient(r.name);
      }
      for (const c of clients) c.close();
      setTimeout(() => process.exit(0), 10);
      return 'bye';
    default:
      throw new Error(`unknown command ${req.cmd}`);
  }
}

serveFleetCalls(handle);
