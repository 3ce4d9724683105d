import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { DemoInterrupted, DemoInterruption } from './demo-interruption';
import { DemoNarration, fmtShares, share, type DemoEvent } from './demo-narration';
import { DemoProcesses, type DemoGreeter } from './demo-processes';
import { meshTarget, openGreeterClient } from '../services/greeter-client';
import { runLoad, type LoadReport, type LoadTick } from '../services/load-generator';
import { createEtcdClient } from '../core/etcd-client';
import type { EtcdConfig } from '../core/etcd-config';
import type { LbPolicy } from '../balancer/channel';
import type { LoadAwareOptions } from '../balancer/lb-policy-config';
import { componentLogger } from '../core/logger';
import { ResolverMarkers } from '../services/load-markers';
import type { LoadMarker } from '../services/load-report';
import { Dashboard } from '../dashboard/dashboard';

export interface DemoOptions {
  /** Load-balancing policy of the load client (default: the mesh's default). */
  lb?: LbPolicy;
  /** The load client's health checking (gRPC A17): default on, service "" (the server as a whole); false: off. */
  healthCheck?: { serviceName: string } | false;
  /** load_aware's failure table and ejection bound (`--failure-codes`, `--max-ejection-percent`). */
  loadAware?: LoadAwareOptions;
  /** Existing etcd to use; without it a local 3-member cluster is started. */
  etcd?: EtcdConfig;
  /** Total run time, ms (the scenario is spread over it). */
  durationMs: number;
  concurrency: number;
  prefix: string;
  service: string;
  /** Election name the greeters campaign on. */
  election: string;
  /** Print the live view / narration (false for --json). */
  view: boolean;
  /** Ctrl-C and friends: aborting ends the demo at whatever point it is; the reason (a signal name) is reported. */
  signal?: AbortSignal;
  /** Keep the load's per-second ticks and the markers (demo steps, resolver updates) for `--report`/`--csv`. */
  collectReport?: boolean;
  /**
   * `--ui`: the dashboard, in this process, on the demo's etcd; greeters then
   * serve /metrics (registered in their Metadata) and `scrape` adds the
   * demo's own load client. `onUrl` gets its URL once it listens.
   */
  ui?: { listen: { host: string; port: number }; scrape: string[]; onUrl: (url: string) => void };
}

export interface DemoSummary {
  ok: number;
  failed: number;
  load: LoadReport | undefined;
  events: DemoEvent[];
  leaders: string[];
  /** Why the demo ended early (the signal name), when it did. */
  interrupted?: string;
  /** The run's namespace: the greeters campaign on `<election>-<runId>`. */
  runId: string;
  /** With `collectReport`: the load's seconds and what happened during them (ms after the load began). */
  ticks?: LoadTick[];
  markers?: LoadMarker[];
}

type DemoState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

/**
 * `mesh demo`: the mission in a minute, and this file its script. A local
 * 3-member etcd (unless --etcd), three greeters, a load client on the etcd
 * resolver; then, while the view shows each backend's share per second:
 * SIGKILL the current leader, start it again, add a fourth. The greeters
 * elect a leader that builds a shared index and reports progress in etcd;
 * followers load it. What it says is demo-narration.ts; the processes it
 * runs, demo-processes.ts.
 *
 * Teardown contract: whatever moment the abort signal comes (during etcd's
 * start, a greeter's start, mid-run), every wait of the scenario gives up
 * at once (DemoInterruption) and the one idempotent `cleanup()` runs: load
 * stopped, greeters SIGTERMed (SIGKILL after 3 s, or at once after
 * `hurry()`), etcd members killed and their data dirs removed. A detached
 * guard process kills them and removes the data dirs if mesh itself dies
 * without cleaning up (SIGKILL).
 */
export class Demo {
  private readonly log = componentLogger('demo');
  private readonly narration: DemoNarration;
  private readonly processes: DemoProcesses;
  private readonly interruption: DemoInterruption;
  private client: Etcd3 | undefined;
  /** The dashboard (--ui), kept as its start-up so a cleanup during start-up still closes it. */
  private dashboard: Promise<Dashboard> | undefined;
  private cleaning: Promise<void> | undefined;
  private endpoints: string[] = [];
  private state: DemoState = 'idle';
  private readonly loadAbort = new AbortController();
  /** The greeter the first step killed, which the second starts again. */
  private killed: DemoGreeter | undefined;
  /** This run's namespace in etcd: two demos on one cluster never touch each other's keys. */
  readonly runId = randomBytes(4).toString('hex');
  /** The election (and progress/index keys) of this run's greeters. */
  private readonly election: string;

  constructor(private readonly opts: DemoOptions) {
    this.narration = new DemoNarration(opts.view);
    this.election = `${opts.election}-${this.runId}`;
    this.interruption = new DemoInterruption(opts.signal, () => {
      // A hang-up took the terminal away: stop drawing on it.
      if (opts.signal?.reason === 'SIGHUP') this.narration.dropView();
      this.loadAbort.abort();
    });
    this.processes = new DemoProcesses({ etcd: opts.etcd, interruption: this.interruption, onGreeterLog: (addr, l) => this.narration.onGreeterLog(addr, l) });
  }

  private setState(next: DemoState): void {
    if (next === this.state) return;
    this.log.info({ event: 'demo.state', from: this.state, to: next }, `demo ${this.state} -> ${next}`);
    this.state = next;
  }

  private record(event: string, fields: Record<string, unknown> = {}, narrate?: string): void {
    this.narration.record(event, fields, narrate);
  }

  /**
   * The scenario, then cleanup (always). An interruption is a result, not an
   * error: the summary says `interrupted` and covers what ran. Other
   * failures are thrown after cleanup.
   */
  async run(): Promise<DemoSummary> {
    let summary: DemoSummary;
    try {
      summary = await this.scenario();
    } catch (err) {
      if (!(err instanceof DemoInterrupted) && !this.interruption.aborted) throw err;
      summary = { ok: 0, failed: 0, load: undefined, events: this.narration.events, leaders: this.narration.leaders, runId: this.runId };
    } finally {
      await this.cleanup();
    }
    if (this.interruption.aborted) {
      summary.interrupted = this.interruption.reason;
      this.record('interrupted', { by: summary.interrupted, ok: summary.ok, failed: summary.failed }, `interrupted by ${summary.interrupted}; everything stopped and removed`);
    }
    return summary;
  }

  /** etcd (local, or the one given), the dashboard (--ui), then three greeters. */
  private async startUp(): Promise<void> {
    const { opts, interruption } = this;
    this.processes.startGuard();
    this.setState('starting');
    interruption.check();
    if (opts.etcd) {
      this.endpoints = opts.etcd.endpoints.map((e) => e.text);
      this.record('etcd.external', { endpoints: this.endpoints, runId: this.runId, election: this.election }, `using etcd at ${this.endpoints.join(',')} (run ${this.runId})`);
    } else {
      const cluster = await this.processes.startLocalEtcd(3, (c, attempt) => {
        this.endpoints = c.members.map((m) => m.endpoint);
        this.record('etcd.starting', { members: 3, endpoints: this.endpoints, dataRoot: c.dataRoot, attempt });
      });
      this.record('etcd.started', { members: 3, endpoints: this.endpoints, dataRoot: cluster.dataRoot, pids: cluster.pids }, `started a local 3-member etcd cluster at ${this.endpoints.join(',')}`);
    }
    this.client = createEtcdClient(opts.etcd ?? { endpoints: this.endpoints });
    if (opts.ui) {
      const ui = opts.ui;
      this.dashboard = Dashboard.start(this.client, { listen: ui.listen, scrape: ui.scrape, prefix: opts.prefix, service: opts.service });
      const d = await interruption.until(this.dashboard);
      this.record('dashboard.started', { url: d.url });
      ui.onUrl(d.url);
    }
    for (let i = 0; i < 3; i++) await interruption.until(this.startGreeter('started'));
  }

  private async scenario(): Promise<DemoSummary> {
    const { opts, narration } = this;
    await this.startUp();
    const client = this.client!;
    const target = meshTarget(opts.prefix, opts.service);
    const channel = openGreeterClient(target, client, { name: 'demo', config: { lb: opts.lb, loadAware: opts.loadAware, healthCheckConfig: opts.healthCheck === false ? undefined : (opts.healthCheck ?? { serviceName: '' }) } });
    this.interruption.check();
    this.setState('running');

    const abort = this.loadAbort;
    const ticks: LoadTick[] = [];
    // --duration covers the whole demo: the load gets what start-up left of it.
    const loadStart = Date.now();
    const loadMs = Math.max(5_000, opts.durationMs - (loadStart - narration.startedAt));
    const resolverMarkers = opts.collectReport ? new ResolverMarkers(client, `${opts.prefix}/${opts.service}/`) : undefined;
    const origin = performance.now();
    narration.loadStarted(origin);
    resolverMarkers?.setOrigin(origin);
    const load = runLoad({
      client: channel.greeter,
      concurrency: opts.concurrency,
      durationMs: loadMs,
      deadlineMs: 1000,
      name: 'demo',
      signal: abort.signal,
      onTick: (t) => {
        ticks.push(t);
        narration.tick(t);
      },
    });
    this.record('load.started', { concurrency: opts.concurrency, target }, `load client: ${opts.concurrency} calls in flight through ${target}`);

    const at = (fraction: number) => loadStart + fraction * loadMs;
    // The leader dies early, while it is still building the index (about 6 s).
    // The fourth joins with 40 % of the load left, so its share is seen even
    // when a busy machine made the start-up and the greeter's start slow.
    const steps: [number, () => Promise<void>][] = [
      [Math.min(0.25, 3000 / loadMs), () => this.killLeaderOrFirst(ticks)],
      [0.45, () => this.restartKilled(ticks)],
      [0.6, () => this.addFourth(ticks)],
    ];
    for (const [fraction, step] of steps) {
      if (!(await sleepUntil(at(fraction), abort.signal))) break;
      try {
        await this.interruption.until(step());
      } catch (err) {
        // Interrupted mid-step: the load (aborted too) still reports what ran.
        if (!(err instanceof DemoInterrupted)) throw err;
        break;
      }
    }
    const report = await load;
    resolverMarkers?.close();
    narration.loadFinished();
    channel.close();
    this.record('load.finished', { ok: report.ok, failed: report.failed, rps: report.rps }, `load finished: ${report.ok} ok, ${report.failed} failed, ${report.rps} calls/s`);
    const forReport = opts.collectReport ? { ticks, markers: [...narration.markers, ...(resolverMarkers?.markers ?? [])] } : {};
    return { ok: report.ok, failed: report.failed, load: report, events: narration.events, leaders: narration.leaders, runId: this.runId, ...forReport };
  }

  /** Step 1: SIGKILL the leader (else the first greeter); narrate when traffic has left it. */
  private async killLeaderOrFirst(ticks: LoadTick[]): Promise<void> {
    const leader = this.narration.currentLeader;
    const greeters = this.processes.greeters;
    const victim = greeters.find((g) => g.addr === leader) ?? greeters[0];
    const wasLeader = victim.addr === leader;
    await this.processes.killGreeter(victim);
    this.killed = victim;
    this.record('server.killed', { addr: victim.addr, signal: 'SIGKILL', wasLeader }, `SIGKILL ${victim.addr}${wasLeader ? ' (the leader)' : ''}: its lease will expire; hedged calls move to the others at once`);
    this.narration.narrateTraffic(ticks, ticks.length + 1, (t) => t.ok > 0 && !t.backends[victim.addr], 'traffic leaves', 'traffic.left', victim.addr, (t) => `traffic left ${victim.addr}: ${fmtShares(t)}`);
  }

  /** Step 2: start the killed greeter again on its port; narrate when traffic returns to it. */
  private async restartKilled(ticks: LoadTick[]): Promise<void> {
    const k = this.killed;
    if (!k) return;
    const g = await this.startGreeter('restarted', k.port);
    this.narration.narrateTraffic(ticks, ticks.length, (t) => share(t, g.addr) >= 0.1, 'traffic returns', 'traffic.returned', g.addr, (t) => `traffic returned to ${g.addr}: ${fmtShares(t)}`);
  }

  /** Step 3: a fourth greeter; narrate when it has its share. */
  private async addFourth(ticks: LoadTick[]): Promise<void> {
    const g = await this.startGreeter('added');
    this.narration.narrateTraffic(ticks, ticks.length, (t) => share(t, g.addr) >= 0.15, 'traffic reaches the fourth', 'traffic.rebalanced', g.addr, (t) => `traffic rebalanced over ${Object.keys(t.backends).length} backends: ${fmtShares(t)}`);
  }

  private async startGreeter(how: 'started' | 'restarted' | 'added', port?: number): Promise<DemoGreeter> {
    const { opts } = this;
    const args = (p: number) => ['server', '--port', String(p), '--etcd', this.endpoints.join(','), '--prefix', opts.prefix, '--service', opts.service, '--ttl', '3', '--elect', this.election, ...(opts.ui ? ['--metrics', '127.0.0.1:0'] : [])];
    const g = await this.processes.startGreeter(args, port);
    this.record(`server.${how}`, { addr: g.addr, pid: g.mesh.proc.pid }, `greeter ${g.addr} ${how} and registered (${this.processes.greeters.length} running)`);
    return g;
  }

  /** This run's election, progress and index keys (its own namespace: `<election>-<runId>`), and nothing else. */
  private async clearDemoKeys(): Promise<void> {
    const c = this.client!;
    const name = this.election;
    await Promise.all([c.delete().prefix(`${name}/`).exec(), c.delete().key(`progress/${name}`).exec(), c.delete().key(`index/${name}`).exec()]);
  }

  /** Stop everything the demo started. Idempotent. */
  cleanup(): Promise<void> {
    if (!this.cleaning) this.cleaning = this.doCleanup();
    return this.cleaning;
  }

  /** A second Ctrl-C: SIGKILL every child now instead of waiting for greeters to drain; cleanup then ends at once. */
  hurry(): void {
    this.processes.hurry();
  }

  private async doCleanup(): Promise<void> {
    this.setState('stopping');
    this.loadAbort.abort();
    this.narration.clearView();
    const servers = await this.processes.stopGreeters();
    // The page goes before etcd does, so it never shows an etcd being torn down.
    await this.dashboard?.then((d) => d.close(), () => undefined);
    const local = this.processes.localEtcd;
    // Against an existing cluster, leave nothing of this run behind in it (bounded: etcd may be the reason we stop).
    if (this.client && !local) await withTimeout(this.clearDemoKeys(), 3000).catch((err) => this.log.warn({ event: 'demo.cleanup_keys_failed', err: String(err) }, `could not delete this run's keys (${this.election})`));
    this.client?.close();
    await this.processes.stopEtcdAndGuard();
    this.setState('stopped');
    this.record('cleanup.done', { servers, etcdStopped: Boolean(local) }, 'stopped every greeter' + (local ? ', the etcd cluster, and removed its data dirs' : ''));
  }

  /** Last resort, synchronous (process 'exit', a forced exit): every child SIGKILLed, the data dirs removed. */
  killNow(): void {
    this.processes.killNow();
  }
}

/** Wait until `when` (Date.now() ms); false if `signal` aborted first. */
async function sleepUntil(when: number, signal: AbortSignal): Promise<boolean> {
  while (Date.now() < when) {
    if (signal.aborted) return false;
    await new Promise((r) => setTimeout(r, Math.min(100, when - Date.now())));
  }
  return !signal.aborted;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
