/**
 * One process of a simulated fleet (forked by bench/scale-herd.ts with an IPC
 * channel): many real registrations (each LeaseRegistration with its own
 * lease and own-key watch, as a `mesh server` holds, kept alive on its etcd
 * client's one LeaseKeepAlive stream, or etcd3's own per lease; or
 * one LeaseRegistrationGroup sharing a lease) and/or many real EtcdResolver
 * instances (each its own Get + watch, built as grpc-js builds them, a
 * recording listener in place of a channel). Several such processes stand
 * for hundreds of servers and clients on a 2-core machine.
 *
 * Requests: {id, cmd, ...}; replies {id, result} or {id, error}.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../core/etcd-client';
import { LeaseRegistration } from '../balancer/registration-lease';
import { LeaseRegistrationGroup } from '../balancer/registration-group';
import { EtcdResolver, ETCD_CLIENT_OPTION, registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';
import { SUBSET_SIZE_OPTION } from '../balancer/subset';
import type { RegistrationState } from '../balancer/registration';
import type { RegistrationKeepAlive } from '../balancer/registration-keeper-lease';
import { leaseKeepAliveFor } from '../core/lease-keepalive-stream';
import { epochNow } from './bench-report';
import { serveFleetCalls } from './scale-fleet-process';

type Endpoint = grpc.experimental.Endpoint;
type StatusOr<T> = grpc.experimental.StatusOr<T>;

export interface FleetRegisterRequest {
  cmd: 'register';
  endpoints: string[];
  prefix: string;
  service: string;
  addrs: string[];
  ttl: number;
  /** One lease for every address of this process (LeaseRegistrationGroup). */
  shared: boolean;
  /** Registrations per etcd client (a real server has one client each; a few dozen share one here). */
  perClient: number;
  /** How the leases are kept alive (default `stream`: one LeaseKeepAlive stream per etcd client; `lease`: etcd3's, one per lease). */
  keepAlive?: RegistrationKeepAlive;
}

export interface FleetResolveRequest {
  cmd: 'resolve';
  endpoints: string[];
  /** `<prefix>/<service>` */
  path: string;
  count: number;
  perClient: number;
  /** Every address the full set holds; a delivery of anything else counts as wrong. */
  expected: string[];
}

export type FleetCall = FleetRegisterRequest | FleetResolveRequest | { cmd: 'report' } | { cmd: 'stop' };
export type FleetRequest = FleetCall & { id: number };

/** What a fleet process reports (epoch ms throughout, comparable across processes). */
export interface FleetReport {
  registrations: {
    count: number;
    /** How many are REGISTERED now. */
    registered: number;
    /** Per registration (or group), when it last became REGISTERED. */
    lastRegisteredAt: number[];
    /** Per registration (or group), when it last began a grant (GRANTING), and when it last went LOST. */
    lastGrantingAt: number[];
    lastLostAt: number[];
    /** LOST transitions seen, all registrations together. */
    losses: number;
  };
  resolvers: {
    count: number;
    /** Per resolver: when its delivered set last changed; its size now; its smallest set after the first full one. */
    lastChangeAt: number[];
    size: number[];
    minSizeAfterFull: number[];
    /** Deliveries of an empty set, of an error (after the first full set), and of an address not in `expected`, all resolvers together. */
    empties: number;
    errors: number;
    wrong: number;
    deliveries: number;
  };
  rss: number;
  cpuMs: number;
  /** The shared keepalive streams of this process's etcd clients, summed (zeros with `keepAlive: 'lease'`). */
  keepAlive: { leases: number; streamsOpened: number; streamFailures: number; sent: number; confirmed: number; lost: number };
}

const clients: Etcd3[] = [];
const regs: Array<LeaseRegistration | LeaseRegistrationGroup> = [];
const regLastAt: number[] = [];
const regGrantAt: number[] = [];
const regLostAt: number[] = [];
let regLosses = 0;
interface Rec {
  resolver: EtcdResolver;
  name: string;
  lastChangeAt: number;
  size: number;
  full: boolean;
  minAfterFull: number;
}
const recs: Rec[] = [];
let empties = 0;
let errors = 0;
let wrong = 0;
let deliveries = 0;
const cpu0 = process.cpuUsage();

function clientFor(i: number, perClient: number, endpoints: string[], pool: Etcd3[]): Etcd3 {
  const k = Math.floor(i / perClient);
  if (!pool[k]) {
    pool[k] = createEtcdClient({ endpoints });
    clients.push(pool[k]);
  }
  return pool[k];
}

async function register(r: FleetRegisterRequest): Promise<{ ms: number }> {
  const t0 = performance.now();
  const pool: Etcd3[] = [];
  const track = (idx: number, reg: LeaseRegistration | LeaseRegistrationGroup) => {
    regLastAt[idx] = 0;
    regGrantAt[idx] = 0;
    regLostAt[idx] = 0;
    reg.on('state', (next: RegistrationState) => {
      if (next === 'REGISTERED') regLastAt[idx] = epochNow();
      if (next === 'GRANTING') regGrantAt[idx] = epochNow();
      if (next === 'LOST') {
        regLosses++;
        regLostAt[idx] = epochNow();
      }
    });
  };
  if (r.shared) {
    const g = new LeaseRegistrationGroup(clientFor(0, 1, r.endpoints, pool), { prefix: r.prefix, service: r.service, ttlSeconds: r.ttl, members: r.addrs.map((addr) => ({ addr })), keepAlive: r.keepAlive });
    track(regs.length, g);
    regs.push(g);
    await g.start();
  } else {
    const started: Promise<void>[] = [];
    r.addrs.forEach((addr, i) => {
      const reg = new LeaseRegistration(clientFor(i, r.perClient, r.endpoints, pool), { prefix: r.prefix, service: r.service, addr, ttlSeconds: r.ttl, keepAlive: r.keepAlive });
      track(regs.length, reg);
      regs.push(reg);
      started.push(reg.start());
    });
    await Promise.all(started);
  }
  return { ms: performance.now() - t0 };
}

async function resolve(r: FleetResolveRequest): Promise<{ ms: number }> {
  const t0 = performance.now();
  const pool: Etcd3[] = [];
  const expected = new Set(r.expected);
  const checked = new WeakSet<Endpoint>();
  let pendingFull = r.count;
  let allFull: () => void = () => undefined;
  const done = new Promise<void>((res) => (allFull = res));
  for (let i = 0; i < r.count; i++) {
    const client = clientFor(i, r.perClient, r.endpoints, pool);
    const name = `fleet-${process.pid}-${recs.length}`;
    registerEtcdResolver(client, name);
    const rec = { name, lastChangeAt: 0, size: -1, full: false, minAfterFull: Infinity } as Rec;
    const uri = { scheme: 'etcd', authority: '', path: r.path } as grpc.experimental.GrpcUri;
    rec.resolver = new EtcdResolver(
      uri,
      (result: StatusOr<Endpoint[]>) => {
        deliveries++;
        if (!result.ok) {
          // Before the first full set an error is start-up (a Get that timed out); after it, a failure handed to the channel.
          if (rec.full) errors++;
          return true;
        }
        const eps = result.value;
        if (eps.length === 0) empties++;
        // The resolver hands the same endpoint object again while its address
        // stays: check each once, so the recording does not cost O(N) per delivery.
        for (const e of eps) {
          if (checked.has(e)) continue;
          checked.add(e);
          const a = e.addresses[0] as { host: string; port: number };
          if (!expected.has(`${a.host}:${a.port}`)) wrong++;
        }
        if (eps.length !== rec.size) rec.lastChangeAt = epochNow();
        rec.size = eps.length;
        if (rec.full) rec.minAfterFull = Math.min(rec.minAfterFull, eps.length);
        else if (eps.length === expected.size) {
          rec.full = true;
          rec.minAfterFull = eps.length;
          if (--pendingFull === 0) allFull();
        }
        return true;
      },
      // Every resolver here is judged on the full set: no subsetting (the default subsets over 100).
      { [ETCD_CLIENT_OPTION]: name, [SUBSET_SIZE_OPTION]: 0 },
    );
    recs.push(rec);
    rec.resolver.updateResolution();
  }
  if (r.count === 0) allFull();
  await done;
  return { ms: performance.now() - t0 };
}

function report(): FleetReport {
  const cpu = process.cpuUsage(cpu0);
  return {
    registrations: {
      count: regs.length,
      registered: regs.filter((g) => g.state === 'REGISTERED').length,
      lastRegisteredAt: regLastAt,
      lastGrantingAt: regGrantAt,
      lastLostAt: regLostAt,
      losses: regLosses,
    },
    resolvers: {
      count: recs.length,
      lastChangeAt: recs.map((r) => r.lastChangeAt),
      size: recs.map((r) => r.size),
      minSizeAfterFull: recs.map((r) => (Number.isFinite(r.minAfterFull) ? r.minAfterFull : -1)),
      empties,
      errors,
      wrong,
      deliveries,
    },
    rss: process.memoryUsage().rss,
    cpuMs: (cpu.user + cpu.system) / 1000,
    keepAlive: keepAliveTotals(),
  };
}

function keepAliveTotals(): FleetReport['keepAlive'] {
  const t = { leases: 0, streamsOpened: 0, streamFailures: 0, sent: 0, confirmed: 0, lost: 0 };
  for (const c of clients) {
    const s = leaseKeepAliveFor(c).stats;
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] += s[k];
  }
  return t;
}

async function stop(): Promise<string> {
  for (const r of recs) {
    r.resolver.destroy();
    unregisterEtcdClient(r.name);
  }
  // Revoking deletes the keys at once; a bounded wait, as etcd may be gone.
  await Promise.race([Promise.all(regs.map((g) => g.close())), new Promise((r) => setTimeout(r, 3_000))]);
  for (const c of clients) c.close();
  setTimeout(() => process.exit(0), 10);
  return 'bye';
}

async function handle(req: FleetRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'register':
      return register(req);
    case 'resolve':
      return resolve(req);
    case 'report':
      return report();
    case 'stop':
      return stop();
  }
}

serveFleetCalls(handle);
