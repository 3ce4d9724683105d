/**
 * Holding many leases in one process: etcd3's own Lease (a LeaseKeepAlive
 * stream per lease, what every registration used before) against the
 * client's one shared stream (core/lease-keepalive-stream.ts), same run,
 * one after the other. Each mode: one fleet process (bench/scale-fleet.ts)
 * with N LeaseRegistrations on ONE etcd client, settled, then a window in
 * which we take its CPU time (process.cpuUsage), etcd's CPU time (/proc),
 * and etcd's own counters for LeaseKeepAlive (`grpc_server_msg_received_total`,
 * `grpc_server_started_total` - `grpc_server_handled_total` = open streams).
 *
 *   npm run build && node dist/bench/scale-keepalive.js [--leases 1000] [--ttl 5] [--window 30] [--rounds 1] [--members 1] [--per-client N] [--modes lease,stream]
 */
import { readFileSync } from 'node:fs';
import type { Etcd3 } from 'etcd3';
import { LocalEtcdCluster, type EtcdMember } from '../demo/etcd-local';
import { createEtcdClient } from '../core/etcd-client';
import { servicePrefix } from '../balancer/endpoint-codec';
import type { RegistrationKeepAlive } from '../balancer/registration-keeper-lease';
import type { FleetReport } from './scale-fleet';
import { FleetProcess } from './scale-fleet-process';
import { fleetAddr } from './scale-herd';
import { round } from './bench-report';
import { sleep } from './bench-processes';
import { getText } from './scale-etcd-rate';

/** One member's LeaseKeepAlive counters (go-grpc-prometheus, on its /metrics). */
export interface KeepAliveCounters {
  /** Streams started, and ended (any code): started - handled are open now. */
  started: number;
  handled: number;
  /** Keepalive requests received on every stream. */
  received: number;
}

/** Each member's LeaseKeepAlive counters; undefined for a member that did not answer. */
export async function leaseKeepAliveCounters(members: EtcdMember[], timeoutMs = 1_500): Promise<(KeepAliveCounters | undefined)[]> {
  return Promise.all(
    members.map(async (m) => {
      if (!m.proc) return undefined;
      const body = await getText(`${m.metricsUrl ?? m.clientUrl}/metrics`, timeoutMs);
      if (body === undefined) return undefined;
      const c: KeepAliveCounters = { started: 0, handled: 0, received: 0 };
      for (const line of body.split('\n')) {
        if (!line.includes('grpc_method="LeaseKeepAlive"')) continue;
        const v = Number(line.slice(line.lastIndexOf(' ') + 1));
        if (line.startsWith('grpc_server_started_total{')) c.started += v;
        else if (line.startsWith('grpc_server_handled_total{')) c.handled += v;
        else if (line.startsWith('grpc_server_msg_received_total{')) c.received += v;
      }
      return c;
    }),
  );
}

/** LeaseKeepAlive streams open on each member now (undefined: the member did not answer). */
export async function openKeepAliveStreams(members: EtcdMember[]): Promise<(number | undefined)[]> {
  return (await leaseKeepAliveCounters(members)).map((c) => (c ? c.started - c.handled : undefined));
}

/** CPU seconds (user + system) of a process so far, from /proc (Linux); undefined elsewhere. */
function procCpuS(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return undefined;
  }
}

export interface KeepAliveBenchOptions {
  cluster: LocalEtcdCluster;
  client: Etcd3;
  leases: number;
  ttl: number;
  windowMs: number;
  /** Registrations per etcd client (default all on one). */
  perClient?: number;
}

export interface KeepAliveBenchResult {
  mode: RegistrationKeepAlive;
  leases: number;
  /** etcd clients in the process. */
  clients: number;
  ttl: number;
  windowS: number;
  /** Every registration started → all REGISTERED. */
  registerMs: number;
  /** The fleet process's CPU over the window, seconds; and as a share of one core. */
  cpuS: number;
  cpuPct: number;
  /** etcd's (every member) CPU over the window, seconds. */
  etcdCpuS: number;
  /** LeaseKeepAlive messages etcd received per second over the window; all its gRPC messages per second. */
  keepAliveMsgsPerS: number;
  /** LeaseKeepAlive streams open in etcd during the window, and started during it. */
  streamsOpen: number;
  streamsStartedInWindow: number;
  /** LOST transitions during the window (should be 0). */
  losses: number;
  rssMB: number;
}

/** One mode: a fresh fleet process, N registrations on one etcd client, a measured window. */
export async function benchKeepAlive(o: KeepAliveBenchOptions, mode: RegistrationKeepAlive, progress: (s: string) => void = () => undefined): Promise<KeepAliveBenchResult> {
  const prefix = `ka-${mode}`;
  const keyPrefix = servicePrefix(prefix, 'greeter');
  const p = new FleetProcess();
  try {
    const addrs = Array.from({ length: o.leases }, (_, i) => fleetAddr(i));
    const { ms } = await p.call<{ ms: number }>({ cmd: 'register', endpoints: o.cluster.endpoints.split(','), prefix, service: 'greeter', addrs, ttl: o.ttl, shared: false, perClient: o.perClient ?? o.leases, keepAlive: mode }, 180_000);
    // Settle: the grants and first keepalives are not the steady state.
    await sleep(Math.max(3_000, o.ttl * 1000));
    const etcdPids = o.cluster.members.map((m) => m.proc?.pid);
    const [c0, r0] = await Promise.all([leaseKeepAliveCounters(o.cluster.members), p.call<FleetReport>({ cmd: 'report' })]);
    const e0 = etcdPids.map(procCpuS);
    const t0 = performance.now();
    await sleep(o.windowMs);
    const [c1, r1] = await Promise.all([leaseKeepAliveCounters(o.cluster.members), p.call<FleetReport>({ cmd: 'report' })]);
    const e1 = etcdPids.map(procCpuS);
    const windowS = (performance.now() - t0) / 1000;
    if (c0.some((c) => !c) || c1.some((c) => !c)) throw new Error('etcd /metrics did not answer');
    const sum = (cs: (KeepAliveCounters | undefined)[], f: (c: KeepAliveCounters) => number) => cs.reduce((s, c) => s + f(c!), 0);
    const cpuS = (r1.cpuMs - r0.cpuMs) / 1000;
    const r: KeepAliveBenchResult = {
      mode,
      leases: o.leases,
      clients: Math.ceil(o.leases / (o.perClient ?? o.leases)),
      ttl: o.ttl,
      windowS: round(windowS, 1),
      registerMs: round(ms, 0),
      cpuS: round(cpuS, 2),
      cpuPct: round((cpuS / windowS) * 100, 1),
      etcdCpuS: round(e1.reduce<number>((s, x, i) => s + (x ?? 0) - (e0[i] ?? 0), 0), 2),
      keepAliveMsgsPerS: round((sum(c1, (c) => c.received) - sum(c0, (c) => c.received)) / windowS, 1),
      streamsOpen: sum(c1, (c) => c.started - c.handled),
      streamsStartedInWindow: sum(c1, (c) => c.started) - sum(c0, (c) => c.started),
      losses: r1.registrations.losses - r0.registrations.losses,
      rssMB: round(r1.rss / 2 ** 20, 0),
    };
    progress(
      `  ${mode === 'lease' ? "etcd3's Lease (a stream each)" : 'one stream per client'}: ${o.leases} leases on ${r.clients} etcd client(s), TTL ${o.ttl} s, ${r.windowS} s window: ` +
        `process CPU ${r.cpuS} s (${r.cpuPct}% of a core), etcd CPU ${r.etcdCpuS} s, etcd received ${r.keepAliveMsgsPerS} keepalives/s on ${r.streamsOpen} open streams ` +
        `(${r.streamsStartedInWindow} started in the window), ${r.losses} losses; registered in ${r.registerMs} ms; rss ${r.rssMB} MB`,
    );
    return r;
  } finally {
    await p.stop();
    const end = performance.now() + 5_000;
    while (performance.now() < end && (await o.client.getAll().prefix(keyPrefix).count().catch(() => -1)) !== 0) await sleep(100);
    await o.client.delete().prefix(keyPrefix).exec().catch(() => undefined);
  }
}

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

async function main(): Promise<void> {
  const leases = arg('leases', 1_000);
  const ttl = arg('ttl', 5);
  const windowMs = arg('window', 30) * 1000;
  const rounds = arg('rounds', 1);
  const m = process.argv.indexOf('--modes');
  const modes = (m > 0 ? process.argv[m + 1].split(',') : ['lease', 'stream']) as RegistrationKeepAlive[];
  const perClient = arg('per-client', leases);
  const cluster = await LocalEtcdCluster.start(arg('members', 1));
  const client = createEtcdClient({ endpoints: cluster.members.map((m) => m.endpoint) });
  const results: KeepAliveBenchResult[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      for (const mode of modes) results.push(await benchKeepAlive({ cluster, client, leases, ttl, windowMs, perClient }, mode, console.log));
    }
  } finally {
    client.close();
    await cluster.stop();
  }
  console.log(JSON.stringify(results));
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
