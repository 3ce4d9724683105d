import type { Etcd3 } from 'etcd3';
import { LocalEtcdCluster } from '../demo/etcd-local';
import { createEtcdClient } from '../core/etcd-client';
import { registerEtcdResolver } from '../balancer/resolver-etcd';
import { servicePrefix } from '../balancer/endpoint-codec';
import { createGreeterClient, meshTarget, type GreeterClient } from '../services/greeter-client';
import { MeshProcess } from '../demo/mesh-process';
import { startServers, stopServers, type BenchServer, type ServerOptions } from './bench-processes';
import { benchOverhead, type OverheadResult } from './bench-overhead';
import { benchFairness, type FairnessResult } from './bench-fairness';
import { RegistryObserver } from './bench-observer';
import { TrafficLoop } from './bench-traffic';
import { benchJoin, type JoinResult } from './bench-time-to-traffic';
import { benchLeave, type LeaveResult } from './bench-time-to-leave';
import { benchScale, type ScaleResult } from './bench-scale';
import { benchHerd, benchRegistrations, type HerdResult, type RegistrationsResult } from './scale-herd';
import { benchWide, type WideResult } from './scale-wide';
import { benchBurst, type BurstResult } from './scale-burst';
import { goScaleBinaries } from './scale-fleet-go';
import { benchLoadAware, type LoadAwareResult } from './bench-load-aware';
import { benchMetrics, type MetricsOverheadResult } from './bench-metrics';
import { benchXds, type XdsBenchResult } from './bench-xds';
import { benchErrors, errorsUnavailable, type ErrorsResult } from './bench-errors';
import type { BenchFlags, Plan, Section } from './bench-plan';
import { round } from './bench-report';

/**
 * Every figure of a run, under the keys of the JSON line, in the order the
 * stages ran (the order the JSON line lists them); a section left out by
 * --only has none.
 */
export interface BenchFigures {
  overhead?: OverheadResult;
  fairness10?: FairnessResult;
  loadAware?: LoadAwareResult;
  /** The broken/flaky/all-failing stage, and the length of its runs, s. */
  errors?: ErrorsResult & { runS: number };
  trafficLoad?: { ratePerSecond: number; concurrency: number };
  leave?: LeaveResult;
  join?: JoinResult;
  trafficLoop?: { ok: number; failed: number; errors: Record<string, number> };
  scale?: ScaleResult;
  burst?: BurstResult;
  /** `goHerd`: the same herd from Go's fleet (clientv3, naming/endpoints, naming/resolver) on the same etcd; `goSkipped`: why it did not run. */
  fleet?: { own: RegistrationsResult; shared: RegistrationsResult; herd: HerdResult; goHerd?: HerdResult; goSkipped?: string; wide: WideResult };
  metrics?: MetricsOverheadResult;
  xds?: XdsBenchResult;
}

export interface StageContext {
  flags: BenchFlags;
  plan: Plan;
  only: Set<Section>;
  log: (s: string) => void;
  /** Undo this when the run ends (success, failure or Ctrl-C), newest first. */
  defer: (undo: () => Promise<void> | void) => void;
}

/** What the stages share: the bench's etcd, two clients on it, the registry names, the 3 base servers. */
interface Fixture {
  etcd: string;
  endpoints: string[];
  resolverEtcd: Etcd3;
  writer: Etcd3;
  prefix: string;
  service: string;
  etcdTarget: string;
  serverOpts: ServerOptions;
  baseAddrs: string[];
}

/**
 * The stages, in order, against a local etcd (`--members`) and real `mesh
 * server` processes on loopback: overhead, fairness, load-aware, leave and
 * join under load, scale and the fleet (on a 3-member etcd of their own),
 * metrics. Each prints its progress; what they measured is returned.
 */
export async function runStages(c: StageContext): Promise<BenchFigures> {
  const { flags, log } = c;
  const cluster = await LocalEtcdCluster.start(flags.members);
  c.defer(() => cluster.stop());
  // Last resort if the process dies without running cleanup: nothing may outlive the bench.
  process.on('exit', () => {
    MeshProcess.killAllNow();
    cluster.killNow();
  });
  const etcd = cluster.endpoints;
  const endpoints = etcd.split(',');
  log(`etcd: ${flags.members} member(s) at ${etcd}`);

  const resolverEtcd: Etcd3 = createEtcdClient({ endpoints });
  c.defer(() => resolverEtcd.close());
  registerEtcdResolver(resolverEtcd);
  const writer: Etcd3 = createEtcdClient({ endpoints });
  c.defer(() => writer.close());

  const prefix = `bench${process.pid}`;
  const service = 'greeter';
  const serverOpts = { etcd, prefix, service, register: true };
  c.defer(() => MeshProcess.stopAll());

  log('starting 3 registered greeter servers...');
  const base = await startServers(3, serverOpts);
  const fx: Fixture = { etcd, endpoints, resolverEtcd, writer, prefix, service, etcdTarget: meshTarget(prefix, service), serverOpts, baseAddrs: base.map((s) => s.addr) };

  const figures: BenchFigures = {};
  const extra = await overheadAndFairness(c, fx, figures);
  if (c.only.has('lb')) {
    const p = c.plan;
    log(`load-aware vs round_robin at concurrency 16: equal backends (${p.lbEqualRuns} alternating runs each), one slow backend (SIGSTOP 40 ms / SIGCONT 10 ms), weights 90/10, brownout; ${p.lbRunMs / 1000} s runs`);
    figures.loadAware = await benchLoadAware({ etcd, writer, prefix: `${prefix}lb`, service, runMs: p.lbRunMs, warmMs: p.lbWarmMs, equalRuns: p.lbEqualRuns, concurrency: 16 }, log);
  }
  if (c.only.has('errors')) {
    const runMs = flags.quick ? 2_500 : 10_000;
    const why = errorsUnavailable();
    if (why) log(`errors: skipped (${why})`);
    else {
      log(`errors: a failing C-core peer among 3 mesh servers, load_aware vs round_robin vs outlier_detection at concurrency 16: broken (${runMs / 1000} s, then healed ${runMs / 1000} s), flaky 20%, all four failing 10%; ${runMs / 1000} s runs`);
      figures.errors = { ...(await benchErrors({ etcd, writer, prefix: `${prefix}err`, service, runMs, concurrency: 16 }, log)), runS: runMs / 1000 };
    }
  }
  await leaveAndJoin(c, fx, extra, figures);
  // Every server still running (the 3 base ones; the stages' own are stopped by them): nothing else runs yet.
  await MeshProcess.stopAll();
  if (c.only.has('scale')) await scaleAndFleet(c, fx, figures);
  if (c.only.has('metrics')) {
    const p = c.plan;
    log(`metrics overhead: a load with --metrics and one without side by side, 3 greeters each (with / without --metrics); ${p.metricsRounds} closed-loop rounds of ${p.metricsRunMs / 1000} s, then ${p.metricsRounds} open-loop rounds at half the closed-loop rate`);
    figures.metrics = await benchMetrics({ etcd, prefix, rounds: p.metricsRounds, runMs: p.metricsRunMs, warmMs: 1_000, concurrency: flags.concurrency >> 1 }, log);
  }
  if (c.only.has('xds')) {
    const quick = flags.quick;
    log('mesh xds: push latency to one client and to many over a 1,000-endpoint service, memory per client, churn at 1,000 writes/s');
    figures.xds = await benchXds(writer, { etcd, prefix: `${prefix}xds`, endpoints: 1000, changes: quick ? 50 : 200, gapMs: 100, clients: quick ? 50 : 100, churnPerSecond: 1000, churnSeconds: quick ? 3 : 10 }, log);
  }
  return figures;
}

/** Resolver overhead on the 3 base servers; fairness over 10 (7 more, kept for the leave trials). */
async function overheadAndFairness(c: StageContext, fx: Fixture, figures: BenchFigures): Promise<BenchServer[]> {
  const { plan: p, flags, log } = c;
  if (c.only.has('overhead')) {
    log(`resolver overhead: ${p.pairs} pairs of ${p.runMs / 1000} s runs at concurrency ${flags.concurrency}, resolver vs static, alternating`);
    figures.overhead = await benchOverhead({ etcdTarget: fx.etcdTarget, addrs: fx.baseAddrs, pairs: p.pairs, runMs: p.runMs, simultaneousRuns: p.simultaneousRuns, warmMs: p.warmMs, concurrency: flags.concurrency, deadlineMs: 1_000 }, log);
  }
  if (!c.only.has('fairness')) return [];
  log('fairness with 10 backends: starting 7 more servers...');
  const extra = await startServers(7, fx.serverOpts);
  figures.fairness10 = await benchFairness({ etcdTarget: fx.etcdTarget, addrs: [...fx.baseAddrs, ...extra.map((s) => s.addr)], runMs: p.fairnessRunMs, warmMs: p.warmMs, concurrency: flags.concurrency, deadlineMs: 1_000 }, log);
  return extra;
}

/** Time to leave (SIGTERM under load) and time to traffic (a new key under load), with one traffic loop through both. */
async function leaveAndJoin(c: StageContext, fx: Fixture, extra: BenchServer[], figures: BenchFigures): Promise<void> {
  const { plan: p, flags, log } = c;
  if (!c.only.has('leave') && !c.only.has('join')) return;
  const { prefix, service, serverOpts } = fx;
  const loadText = flags.trafficRate > 0 ? `${flags.trafficRate} calls/s paced, ${p.trafficConcurrency} workers` : `closed loop, concurrency ${p.trafficConcurrency}`;
  figures.trafficLoad = { ratePerSecond: flags.trafficRate, concurrency: p.trafficConcurrency };
  const observer = await RegistryObserver.start(fx.resolverEtcd, servicePrefix(prefix, service));
  c.defer(() => observer.close());
  const client: GreeterClient = createGreeterClient(fx.etcdTarget);
  c.defer(() => client.close());
  const loop = new TrafficLoop(client, p.trafficConcurrency, 1_000, 10 * 60_000, flags.trafficRate).start();
  c.defer(() => loop.stop());

  if (c.only.has('leave')) {
    const more = Math.max(0, p.leaveTrials - extra.length);
    if (more > 0) {
      log(`time to leave: starting ${more} more servers...`);
      extra.push(...(await startServers(more, serverOpts)));
    }
    const leavers = extra.slice(0, p.leaveTrials);
    log(`time to leave: ${leavers.length} trials (SIGTERM under load: ${loadText})`);
    figures.leave = await benchLeave({ prefix, service, leavers, observer, loop }, log);
  }
  await stopServers(extra);

  if (c.only.has('join')) {
    log(`time to traffic: starting ${p.joinTrials} --no-register servers (one fresh backend per trial)...`);
    const joiners = await startServers(p.joinTrials, { ...serverOpts, register: false });
    const lease = fx.writer.lease(30);
    const leaseId = await lease.grant();
    c.defer(() => lease.revoke().catch(() => undefined));
    log(`time to traffic: ${joiners.length} trials (key written at t0 → first reply from the new backend; load: ${loadText})`);
    figures.join = await benchJoin({ prefix, service, joiners, writer: fx.writer, leaseId, observer, loop }, log);
  }
  await loop.stop();
  client.close();
  await observer.close();
  figures.trafficLoop = { ok: loop.ok, failed: loop.failed, errors: loop.errors };
}

/** The resolver at 1,000 and 10,000 endpoints; then issue 14 items 1-3 on a 3-member etcd of their own. */
async function scaleAndFleet(c: StageContext, fx: Fixture, figures: BenchFigures): Promise<void> {
  const { plan: p, log } = c;
  const { prefix, service } = fx;
  log(`scale: ${p.scaleSizes.join(' and ')} endpoints under one prefix; churn ${p.churnPerSecond}/s for ${p.churnSeconds} s`);
  figures.scale = await benchScale(
    { etcdEndpoints: fx.endpoints, client: fx.writer, prefix: `${prefix}scale`, service, sizes: p.scaleSizes, firstSetTrials: p.firstSetTrials, churnPerSecond: p.churnPerSecond, churnSeconds: p.churnSeconds, leases: 4 },
    log,
  );
  log(`scale: a burst of 1,000 registrations (one transaction, then 1,000 separate puts) under 1 and 50 resolvers in one process, old coalescing vs current, ${p.burstRounds} round(s)`);
  figures.burst = await benchBurst({ registrations: 1_000, resolverCounts: [1, 50], perClient: 10, settleMs: 500, rounds: p.burstRounds }, log);
  // The herd stops every member, which must not touch the bench's cluster.
  const f = p.fleet;
  const fleetEtcd = await LocalEtcdCluster.start(3);
  c.defer(() => fleetEtcd.stop());
  process.on('exit', () => fleetEtcd.killNow());
  const fleetClient = createEtcdClient({ endpoints: fleetEtcd.endpoints.split(',') });
  c.defer(() => fleetClient.close());
  const ro = { cluster: fleetEtcd, client: fleetClient, prefix: `${prefix}fleet`, service, registrations: f.registrations, processes: f.processes, ttl: 10, windowMs: f.windowMs };
  log(`scale: ${f.registrations} registrations from ${f.processes} processes on a 3-member etcd, TTL 10 s, etcd's request rate over ${f.windowMs / 1000} s`);
  const own = await benchRegistrations(ro, false, log);
  const shared = await benchRegistrations(ro, true, log);
  log(`scale: outage herd, ${f.herdRegistrations} registrations (TTL ${f.herdTtl} s) + ${f.herdResolvers} resolvers, every etcd member SIGSTOPped for 3x TTL`);
  const herdOpts = { cluster: fleetEtcd, client: fleetClient, service, registrations: f.herdRegistrations, resolvers: f.herdResolvers, registrarProcesses: f.herdProcesses, resolverProcesses: f.herdProcesses, resolversPerClient: 10, registrationsPerClient: 50, ttl: f.herdTtl, outageTtls: 3, settleTimeoutMs: f.herdSettleMs };
  const herd = await benchHerd({ ...herdOpts, prefix: `${prefix}herd` }, log);
  // The same herd from Go's fleet, on the same etcd, right after ours.
  const go = await goScaleBinaries();
  let goHerd: HerdResult | undefined;
  const goSkipped = typeof go === 'string' ? go : undefined;
  if (typeof go === 'string') log(`scale: Go fleet and client skipped: ${go}`);
  else {
    log(`scale: the same herd from a Go fleet (clientv3 + naming/endpoints Manager, naming/resolver; built ${go.buildMs ? `in ${round(go.buildMs / 1000, 1)} s` : 'before: cached'})`);
    goHerd = await benchHerd({ ...herdOpts, prefix: `${prefix}goherd`, go: { binary: go.fleet } }, log);
  }
  log(`scale: one client over ${f.wideBackends} real greeter ports (its defaults, then --subset 0${goSkipped ? '' : ', and a grpc-go client'}) vs over 3, ${f.wideRounds} round(s) of ${f.wideRunMs / 1000} s, concurrency 16`);
  const wide = await benchWide(
    { endpoints: fleetEtcd.endpoints.split(','), prefix: `${prefix}wide`, wide: f.wideBackends, narrow: 3, concurrency: 16, warmMs: 1_000, durationMs: f.wideRunMs, idleMs: 3_000, rounds: f.wideRounds, goClient: typeof go === 'string' ? undefined : go.wideClient },
    log,
  );
  figures.fleet = { own, shared, herd, goHerd, goSkipped, wide };
}
