import type { Etcd3 } from 'etcd3';
import type { LocalEtcdCluster } from '../demo/etcd-local';
import { servicePrefix } from '../balancer/endpoint-codec';
import type { FleetReport } from './scale-fleet';
import { FleetProcess } from './scale-fleet-process';
import { GoFleetProcess, type FleetHandle } from './scale-fleet-go';
import { EtcdRateSampler, etcdMessagesReceived } from './scale-etcd-rate';
import { epochNow, round } from './bench-report';
import { sleep } from './bench-processes';

/** Distinct registry addresses 12.a.b.c:8080 (never dialled: the resolvers here record, they do not connect). */
export function fleetAddr(i: number): string {
  return `12.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;
}

function split<T>(xs: T[], parts: number): T[][] {
  const out: T[][] = Array.from({ length: parts }, () => []);
  xs.forEach((x, i) => out[i % parts].push(x));
  return out;
}

async function countKeys(client: Etcd3, keyPrefix: string): Promise<number> {
  return client.getAll().prefix(keyPrefix).count();
}

/** Poll `cond` every `everyMs` until true or `timeoutMs`; returns whether it held. */
async function until(cond: () => Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    if (await cond().catch(() => false)) return true;
    if (performance.now() > end) return false;
    await sleep(everyMs);
  }
}

export interface RegistrationsOptions {
  cluster: LocalEtcdCluster;
  client: Etcd3;
  prefix: string;
  service: string;
  registrations: number;
  processes: number;
  ttl: number;
  /** Steady-state window over which etcd's request rate is taken, ms. */
  windowMs: number;
}

export interface RegistrationsResult {
  shared: boolean;
  registrations: number;
  processes: number;
  ttl: number;
  /** 'register' sent to every (already running) process → every key visible in etcd. */
  allVisibleMs: number;
  /** etcd messages received per second, every member, over the window. */
  steadyPerS: number;
  /** Leases held in etcd (`etcdctl lease list`). */
  leases: number;
  fleetRssMB: number;
}

/**
 * Item 1: N registrations from a few processes, each with its own lease (as
 * N `mesh server`s would hold) or one lease per process
 * (LeaseRegistrationGroup). Time until all are visible; etcd's request rate
 * at steady state, from its own counters.
 */
export async function benchRegistrations(o: RegistrationsOptions, shared: boolean, progress: (s: string) => void): Promise<RegistrationsResult> {
  const keyPrefix = servicePrefix(o.prefix, o.service);
  const procs = Array.from({ length: o.processes }, () => new FleetProcess());
  try {
    const endpoints = o.cluster.endpoints.split(',');
    const addrs = split(Array.from({ length: o.registrations }, (_, i) => fleetAddr(i)), o.processes);
    const t0 = performance.now();
    const started = procs.map((p, i) => p.call({ cmd: 'register', endpoints, prefix: o.prefix, service: o.service, addrs: addrs[i], ttl: o.ttl, shared, perClient: 50 }, 180_000));
    const visible = await until(async () => (await countKeys(o.client, keyPrefix)) === o.registrations, 30_000);
    const allVisibleMs = performance.now() - t0;
    await Promise.all(started);
    if (!visible) throw new Error(`only ${await countKeys(o.client, keyPrefix)} of ${o.registrations} registrations visible after 30 s`);
    // Settle: the start-up grants and puts are not steady state.
    await sleep(Math.min(3_000, o.ttl * 400));
    const a = await etcdMessagesReceived(o.cluster.members);
    const ta = performance.now();
    await sleep(o.windowMs);
    const b = await etcdMessagesReceived(o.cluster.members);
    const tb = performance.now();
    if (a === undefined || b === undefined) throw new Error('etcd /metrics did not answer');
    const leases = (await o.client.leaseClient.leaseLeases()).leases.length;
    const reports = await Promise.all(procs.map((p) => p.call<FleetReport>({ cmd: 'report' })));
    const r: RegistrationsResult = {
      shared,
      registrations: o.registrations,
      processes: o.processes,
      ttl: o.ttl,
      allVisibleMs: round(allVisibleMs, 0),
      steadyPerS: round(((b - a) * 1000) / (tb - ta), 1),
      leases,
      fleetRssMB: round(reports.reduce((s, x) => s + x.rss, 0) / 2 ** 20, 0),
    };
    progress(`  ${o.registrations} registrations, ${shared ? 'one lease per process' : 'one lease each'}: all visible in ${r.allVisibleMs} ms; etcd ${r.steadyPerS} msgs/s at steady state; ${leases} leases`);
    return r;
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await until(async () => (await countKeys(o.client, keyPrefix)) === 0, 5_000, 100);
    await o.client.delete().prefix(keyPrefix).exec().catch(() => undefined);
  }
}

export interface HerdOptions {
  cluster: LocalEtcdCluster;
  client: Etcd3;
  prefix: string;
  service: string;
  registrations: number;
  resolvers: number;
  registrarProcesses: number;
  resolverProcesses: number;
  /** Registrations per etcd client (1: each its own connection, as separate servers have). */
  registrationsPerClient: number;
  /** Resolvers per etcd client (each still its own watch). */
  resolversPerClient: number;
  ttl: number;
  /** Outage length in TTLs (3 in the issue). */
  outageTtls: number;
  /** Whose fleet: ours (bench/scale-fleet.ts, the default) or Go's (test/peers/go/fleet, this binary). */
  go?: { binary: string };
  /** Steady state before the outage over which etcd's rate and the fleet's CPU are taken, ms (default max(3 s, 2 TTL)). */
  steadyMs?: number;
  /** How long to wait after etcd answers for every registration back and every resolver right, ms (default 20 s). */
  settleTimeoutMs?: number;
}

export interface HerdResult {
  /** Whose fleet ran: ours, or Go's (clientv3, naming/endpoints, naming/resolver). */
  fleet: 'ours' | 'go';
  registrations: number;
  resolvers: number;
  ttl: number;
  outageMs: number;
  /** SIGCONT → every member answering /metrics. */
  answerAfterContMs: number;
  /** etcd answering → the last registration REGISTERED again (and every key in etcd). */
  reregisteredMs: number;
  /** etcd answering → a registration REGISTERED again: the median, and the 90th percentile. */
  reregisteredP50Ms: number;
  reregisteredP90Ms: number;
  /** etcd answering → a registration's last grant began (the wait: probe and jitter): median, and the last. */
  /** etcd answering → a registration went LOST (negative: during the outage): median, and the last. */
  lostP50Ms: number;
  lostMaxMs: number;
  grantStartP50Ms: number;
  grantStartMaxMs: number;
  /** A registration's last grant began → it was REGISTERED (the grant, the put, the retries): median, and the longest. */
  grantTookP50Ms: number;
  grantTookMaxMs: number;
  /** Registrations that went LOST during the outage (all, with an outage of 3 TTL). */
  losses: number;
  /** etcd answering → the last resolver's set changed for the last time (it is then correct). */
  resolversSettledMs: number;
  /** The last registration back → the last resolver correct (negative: resolvers were done first). */
  resolversAfterRegisteredMs: number;
  resolversCorrect: number;
  /** Deliveries of an empty set / of an error (after the first full set) / of an unknown address, every resolver, the whole run. */
  emptySets: number;
  errorDeliveries: number;
  wrongAddresses: number;
  /** Smallest set any resolver delivered after its first full one. */
  minSetAfterFull: number;
  /** Sets handed over per resolver, the whole run (the first full one included). */
  deliveriesPerResolver: number;
  keysAfter: number;
  /** etcd messages/s before the outage; highest 200 ms rate in the 5 s after SIGCONT; messages in the first second after SIGCONT. */
  steadyPerS: number;
  peakPerS: number;
  firstSecondMsgs: number;
  /** Whether every registration was back and every resolver right within settleTimeoutMs. */
  settled: boolean;
  /** CPU of the fleet's processes from just before SIGSTOP to the end (settled + 1.5 s), s: registrars, resolvers, both. */
  recoveryCpuS: { registrars: number; resolvers: number; total: number };
  /** At steady state (steadyMs before the outage): registrar CPU per registration, µs per s; resolver CPU per resolver, µs per s. */
  steadyCpuUsPerRegPerS: number;
  steadyCpuUsPerResolverPerS: number;
  steadyMs: number;
}

/**
 * Item 2: N registrations and R resolvers; every etcd member SIGSTOPped for
 * `outageTtls` x TTL, then SIGCONTed. Measures re-registration, what the
 * resolvers delivered throughout, and etcd's request rate in recovery.
 */
export async function benchHerd(o: HerdOptions, progress: (s: string) => void): Promise<HerdResult> {
  const keyPrefix = servicePrefix(o.prefix, o.service);
  const endpoints = o.cluster.endpoints.split(',');
  const all = Array.from({ length: o.registrations }, (_, i) => fleetAddr(i));
  const spawn = (): FleetHandle => (o.go ? new GoFleetProcess(o.go.binary) : new FleetProcess());
  const registrars = Array.from({ length: o.registrarProcesses }, spawn);
  const resolvers = Array.from({ length: o.resolverProcesses }, spawn);
  const who = o.go ? 'Go fleet' : 'our fleet';
  const sampler = new EtcdRateSampler(o.cluster.members, 200);
  let stopped = false;
  try {
    const addrs = split(all, registrars.length);
    await Promise.all(registrars.map((p, i) => p.call({ cmd: 'register', endpoints, prefix: o.prefix, service: o.service, addrs: addrs[i], ttl: o.ttl, shared: false, perClient: o.registrationsPerClient }, 180_000)));
    const counts = split(Array.from({ length: o.resolvers }, (_, i) => i), resolvers.length).map((x) => x.length);
    await Promise.all(resolvers.map((p, i) => p.call({ cmd: 'resolve', endpoints, path: `${o.prefix}/${o.service}`, count: counts[i], perClient: o.resolversPerClient, expected: all }, 180_000)));
    progress(`  herd (${who}): ${o.registrations} registrations (TTL ${o.ttl} s) and ${o.resolvers} resolvers up, every set full`);
    const report = async () => {
      const regs = await Promise.all(registrars.map((p) => p.call<FleetReport>({ cmd: 'report' })));
      const ress = await Promise.all(resolvers.map((p) => p.call<FleetReport>({ cmd: 'report' })));
      return { regs, ress };
    };
    const cpuOf = (r: FleetReport[]) => r.reduce((a, x) => a + x.cpuMs, 0);
    sampler.start();
    // Settle after the start-up (grants, puts, the resolvers' first lists), then the steady window.
    await sleep(1_000);
    const steadyMs = o.steadyMs ?? Math.max(3_000, 2 * o.ttl * 1000);
    const s0 = await report();
    const ts0 = epochNow();
    await sleep(steadyMs);
    const s1 = await report();
    const ts1 = epochNow();
    const steady = sampler.rates(ts0 + 200, ts1);
    const steadyPerS = steady.length ? steady.reduce((s, r) => s + r.perS, 0) / steady.length : NaN;
    const steadyS = (ts1 - ts0) / 1000;
    const steadyCpuUsPerRegPerS = ((cpuOf(s1.regs) - cpuOf(s0.regs)) * 1000) / o.registrations / steadyS;
    const steadyCpuUsPerResolverPerS = ((cpuOf(s1.ress) - cpuOf(s0.ress)) * 1000) / Math.max(1, o.resolvers) / steadyS;
    const before = s1;

    const outageMs = o.outageTtls * o.ttl * 1000;
    const tStop = epochNow();
    stopped = true;
    for (const m of o.cluster.members) m.proc?.kill('SIGSTOP');
    await sleep(outageMs);
    const tCont = epochNow();
    for (const m of o.cluster.members) m.proc?.kill('SIGCONT');
    stopped = false;
    progress(`  herd (${who}): every etcd member stopped for ${outageMs} ms, resumed`);

    const answered = await until(async () => sampler.firstAnsweredAfter(tCont) !== undefined, 10_000, 20);
    if (!answered) throw new Error(`etcd did not answer /metrics within 10 s of SIGCONT (samples since: ${sampler.samples.filter((x) => x.t >= tCont).map((x) => `${round(x.t - tCont, 0)}:${x.total ?? '-'}`).join(' ')})`);
    const tAnswer = sampler.firstAnsweredAfter(tCont)!.t;

    let last = await report();
    const settled = await until(
      async () => {
        last = await report();
        const back = last.regs.every((r) => r.registrations.registered === r.registrations.count && r.registrations.lastRegisteredAt.every((t) => t > tStop));
        const correct = last.ress.every((r) => r.resolvers.size.every((s) => s === o.registrations));
        return back && correct && (await countKeys(o.client, keyPrefix)) === o.registrations;
      },
      o.settleTimeoutMs ?? 20_000,
      200,
    );
    // Wait a little longer so a late lease expiry in etcd (deleting keys) would show up in the resolvers.
    await sleep(1_500);
    last = await report();
    sampler.stop();
    const lastBack = Math.max(...last.regs.flatMap((r) => r.registrations.lastRegisteredAt));
    const backs = last.regs.flatMap((r) => r.registrations.lastRegisteredAt).map((t) => t - tAnswer);
    const grantStarts = last.regs.flatMap((r) => r.registrations.lastGrantingAt).map((t) => t - tAnswer);
    const losts = last.regs.flatMap((r) => r.registrations.lastLostAt).map((t) => t - tAnswer);
    const grantTook = last.regs.flatMap((r) => r.registrations.lastRegisteredAt.map((t, i) => t - r.registrations.lastGrantingAt[i]));
    const pct = (xs: number[], q: number) => round([...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))], 0);
    const lastChange = Math.max(...last.ress.flatMap((r) => r.resolvers.lastChangeAt));
    const lastSample = sampler.lastAnsweredBefore(tStop);
    const afterOne = sampler.firstAnsweredAfter(tCont + 1_000);
    const peak = sampler.rates(tCont, tCont + 5_000).reduce((m, r) => Math.max(m, r.perS), 0);
    const regCpu = (cpuOf(last.regs) - cpuOf(before.regs)) / 1000;
    const resCpu = (cpuOf(last.ress) - cpuOf(before.ress)) / 1000;
    const r: HerdResult = {
      fleet: o.go ? 'go' : 'ours',
      registrations: o.registrations,
      resolvers: o.resolvers,
      ttl: o.ttl,
      outageMs,
      answerAfterContMs: round(tAnswer - tCont, 0),
      reregisteredMs: round(lastBack - tAnswer, 0),
      reregisteredP50Ms: pct(backs, 0.5),
      reregisteredP90Ms: pct(backs, 0.9),
      lostP50Ms: pct(losts, 0.5),
      lostMaxMs: pct(losts, 1),
      grantStartP50Ms: pct(grantStarts, 0.5),
      grantStartMaxMs: pct(grantStarts, 1),
      grantTookP50Ms: pct(grantTook, 0.5),
      grantTookMaxMs: pct(grantTook, 1),
      losses: last.regs.reduce((s, x) => s + x.registrations.losses, 0),
      resolversSettledMs: round(lastChange - tAnswer, 0),
      resolversAfterRegisteredMs: round(lastChange - lastBack, 0),
      resolversCorrect: last.ress.reduce((s, x) => s + x.resolvers.size.filter((n) => n === o.registrations).length, 0),
      emptySets: last.ress.reduce((s, x) => s + x.resolvers.empties, 0),
      errorDeliveries: last.ress.reduce((s, x) => s + x.resolvers.errors, 0),
      wrongAddresses: last.ress.reduce((s, x) => s + x.resolvers.wrong, 0),
      minSetAfterFull: Math.min(...last.ress.flatMap((x) => x.resolvers.minSizeAfterFull)),
      deliveriesPerResolver: round(last.ress.reduce((s, x) => s + x.resolvers.deliveries, 0) / o.resolvers, 1),
      keysAfter: await countKeys(o.client, keyPrefix),
      steadyPerS: round(steadyPerS, 0),
      peakPerS: round(peak, 0),
      firstSecondMsgs: lastSample?.total !== undefined && afterOne?.total !== undefined ? round(((afterOne.total - lastSample.total) * 1000) / (afterOne.t - tCont), 0) : NaN,
      settled,
      recoveryCpuS: { registrars: round(regCpu, 2), resolvers: round(resCpu, 2), total: round(regCpu + resCpu, 2) },
      steadyCpuUsPerRegPerS: round(steadyCpuUsPerRegPerS, 1),
      steadyCpuUsPerResolverPerS: round(steadyCpuUsPerResolverPerS, 1),
      steadyMs,
    };
    if (!settled) progress(`  herd (${who}): NOT settled within ${(o.settleTimeoutMs ?? 20_000) / 1000} s of etcd answering`);
    progress(
      `  herd (${who}): etcd answered ${r.answerAfterContMs} ms after SIGCONT; all ${r.registrations} registered again ${r.reregisteredMs} ms after that (p50 ${r.reregisteredP50Ms}, p90 ${r.reregisteredP90Ms}; went LOST p50 ${r.lostP50Ms}, last ${r.lostMaxMs}; grants began p50 ${r.grantStartP50Ms}, last ${r.grantStartMaxMs}; a grant took p50 ${r.grantTookP50Ms}, max ${r.grantTookMaxMs}; ${r.losses} leases lost); ` +
        `resolvers settled ${r.resolversSettledMs} ms after it (${r.resolversCorrect}/${r.resolvers} correct); empty sets ${r.emptySets}, smallest set ${r.minSetAfterFull}, ${r.deliveriesPerResolver} sets per resolver; ` +
        `etcd msgs/s steady ${r.steadyPerS}, peak ${r.peakPerS}, first second ${r.firstSecondMsgs}; ` +
        `fleet CPU over the episode ${r.recoveryCpuS.total} s (registrars ${r.recoveryCpuS.registrars}, resolvers ${r.recoveryCpuS.resolvers}); steady ${r.steadyCpuUsPerRegPerS} µs/s per registration, ${r.steadyCpuUsPerResolverPerS} µs/s per resolver`,
    );
    return r;
  } finally {
    sampler.stop();
    if (stopped) for (const m of o.cluster.members) m.proc?.kill('SIGCONT');
    await Promise.all([...registrars, ...resolvers].map((p) => p.stop()));
    await until(async () => (await countKeys(o.client, keyPrefix)) === 0, 5_000, 100);
    await o.client.delete().prefix(keyPrefix).exec().catch(() => undefined);
  }
}
