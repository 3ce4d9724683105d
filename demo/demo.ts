import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { Etcd3 } from 'etcd3';
import { LocalEtcdCluster } from './etcd-local';
import { freePort } from './free-port';
import { waitFor } from './poll';
import { MeshProcess, type LogLine } from './mesh-process';
import { isRunning, Reaper, sleepSync } from './reaper';
import { meshTarget, openGreeterClient } from '../services/greeter-client';
import { runLoad, type LoadReport, type LoadTick } from '../services/load-generator';
import { TrafficView } from '../services/traffic-view';
import { createEtcdClient } from '../core/etcd-client';
import type { EtcdConfig } from '../core/etcd-config';
import type { LbPolicy } from '../balancer/channel';
import type { LoadAwareOptions } from '../balancer/lb-policy-config';
import { componentLogger } from '../core/logger';
import { ResolverMarkers } from '../services/load-markers';
import type { LoadMarker } from '../services/load-report';
import { Dashboard } from '../dashboard/dashboard';

/** One thing the demo did or saw, in order; `--json` prints them all. */
export interface DemoEvent {
  /** ms since the demo started. */
  t: number;
  event: string;
  [field: string]: unknown;
}

export interface DemoOptions {
  /** Load-balancing policy of the load client (default: the mesh's default). */
  lb?: LbPolicy;
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

/** The demo was stopped (signal) before a step finished; not a failure of the step. */
export class DemoInterrupted extends Error {
  constructor(readonly reason: string) {
    super(`demo interrupted (${reason})`);
  }
}

type DemoState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

interface DemoServer {
  addr: string;
  port: number;
  proc: ChildProcess;
  exited: Promise<void>;
}

/**
 * `mesh demo`: the mission in a minute. A local 3-member etcd (unless
 * --etcd), three greeters, a load client on the etcd resolver; then, while
 * the view shows each backend's share per second: SIGKILL the current
 * leader, start it again, add a fourth. The greeters elect a leader that
 * builds a shared index and reports progress in etcd; followers load it.
 *
 * Teardown contract: whatever moment the abort signal comes (during etcd's
 * start, a greeter's start, mid-run), every wait of the scenario gives up
 * at once and the one idempotent `cleanup()` runs: load stopped, greeters
 * SIGTERMed (SIGKILL after 3 s, or at once after `hurry()`), etcd members
 * killed and their data dirs removed. Nothing is spawned once cleanup has
 * begun, and every child is tracked from the moment it is spawned, so
 * cleanup sees all of them. Children run in sessions of their own (a
 * terminal's Ctrl-C or hang-up reaches only mesh, which stops them in
 * order); a detached guard process (demo/reaper.ts) kills them and removes the
 * data dirs if mesh itself dies without cleaning up (SIGKILL).
 */
export class Demo {
  private readonly events: DemoEvent[] = [];
  private readonly start = Date.now();
  private readonly log = componentLogger('demo');
  private readonly servers: DemoServer[] = [];
  /** Every child process not yet exited (greeters and etcd members). */
  private readonly children = new Set<ChildProcess>();
  private cluster: LocalEtcdCluster | undefined;
  private client: Etcd3 | undefined;
  /** The dashboard (--ui), kept as its start-up so a cleanup during start-up still closes it. */
  private dashboard: Promise<Dashboard> | undefined;
  private view: TrafficView | undefined;
  private leader: string | undefined;
  private readonly leaders: string[] = [];
  private indexPercent: number | undefined;
  private cleaning: Promise<void> | undefined;
  private endpoints: string[] = [];
  private state: DemoState = 'idle';
  private reaper: Reaper | undefined;
  private readonly loadAbort = new AbortController();
  private readonly interrupted: Promise<never>;
  private hurried = false;
  /** This run's namespace in etcd: two demos on one cluster never touch each other's keys. */
  readonly runId = randomBytes(4).toString('hex');
  /** The election (and progress/index keys) of this run's greeters. */
  private readonly election: string;

  constructor(private readonly opts: DemoOptions) {
    this.view = opts.view ? new TrafficView() : undefined;
    this.election = `${opts.election}-${this.runId}`;
    // Settles only by rejecting, when the signal aborts; until() races every wait against it.
    this.interrupted = new Promise<never>((_, reject) => {
      const onAbort = () => {
        // A hang-up took the terminal away: stop drawing on it.
        if (opts.signal?.reason === 'SIGHUP') this.view = undefined;
        this.loadAbort.abort();
        reject(new DemoInterrupted(String(opts.signal?.reason ?? 'aborted')));
      };
      if (opts.signal?.aborted) onAbort();
      else opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
    this.interrupted.catch(() => undefined);
  }

  private setState(next: DemoState): void {
    if (next === this.state) return;
    this.log.info({ event: 'demo.state', from: this.state, to: next }, `demo ${this.state} -> ${next}`);
    this.state = next;
  }

  /** `p`, unless the demo is interrupted first (then DemoInterrupted; `p` is left to settle unobserved). */
  private until<T>(p: Promise<T>): Promise<T> {
    p.catch(() => undefined);
    return Promise.race([p, this.interrupted]);
  }

  private checkNotInterrupted(): void {
    if (this.opts.signal?.aborted) throw new DemoInterrupted(String(this.opts.signal.reason ?? 'aborted'));
  }

  /**
   * Start `mesh ARGS` as a child the demo owns: refused once cleanup has
   * begun; in a session of its own; tracked (and told to the guard) from the
   * moment it is spawned; etcd credentials in its environment, never argv.
   */
  private spawnMesh(args: string[], onLog: (l: LogLine) => void): MeshProcess {
    if (this.state === 'stopping' || this.state === 'stopped') throw new DemoInterrupted(String(this.opts.signal?.reason ?? 'cleanup'));
    return new MeshProcess(args, credentialEnv(this.opts.etcd), { detached: true, stdout: 'ignore', onSpawn: (proc) => this.adopt(proc), onLog });
  }

  private adopt(proc: ChildProcess): void {
    if (proc.pid === undefined) return;
    const pid = proc.pid;
    this.children.add(proc);
    this.tellReaper(`pid ${pid}`);
    proc.once('exit', () => {
      this.children.delete(proc);
      this.tellReaper(`gone ${pid}`);
    });
  }

  private tellReaper(line: string): void {
    this.reaper?.tell(line);
  }

  private record(event: string, fields: Record<string, unknown> = {}, narrate?: string): void {
    const e: DemoEvent = { t: Date.now() - this.start, event, ...fields };
    this.events.push(e);
    if (this.loadOrigin !== undefined) this.markers.push({ tMs: performance.now() - this.loadOrigin, kind: 'event', text: narrate ?? event });
    this.log.info({ ...fields, event: `demo.${event}` }, narrate ?? event);
    if (narrate) this.view?.note(narrate);
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
      if (!(err instanceof DemoInterrupted) && !this.opts.signal?.aborted) throw err;
      summary = { ok: 0, failed: 0, load: undefined, events: this.events, leaders: this.leaders, runId: this.runId };
    } finally {
      await this.cleanup();
    }
    if (this.opts.signal?.aborted) {
      summary.interrupted = String(this.opts.signal.reason ?? 'aborted');
      this.record('interrupted', { by: summary.interrupted, ok: summary.ok, failed: summary.failed }, `interrupted by ${summary.interrupted}; everything stopped and removed`);
    }
    return summary;
  }

  private async scenario(): Promise<DemoSummary> {
    const { opts } = this;
    this.reaper = Reaper.start();
    this.setState('starting');
    this.checkNotInterrupted();
    if (opts.etcd) {
      this.endpoints = opts.etcd.endpoints.map((e) => e.text);
      this.record('etcd.external', { endpoints: this.endpoints, runId: this.runId, election: this.election }, `using etcd at ${this.endpoints.join(',')} (run ${this.runId})`);
    } else {
      let cluster: LocalEtcdCluster;
      for (let attempt = 1; ; attempt++) {
        cluster = await LocalEtcdCluster.create(3, [], { dataRootPrefix: 'etcd-mesh-demo-', detached: true });
        this.cluster = cluster;
        this.tellReaper(`dir ${JSON.stringify(cluster.dataRoot)}`);
        this.endpoints = cluster.members.map((m) => m.endpoint);
        this.record('etcd.starting', { members: 3, endpoints: this.endpoints, dataRoot: cluster.dataRoot, attempt });
        this.checkNotInterrupted();
        const started = cluster.startMembers();
        for (const m of cluster.members) if (m.proc) this.adopt(m.proc);
        try {
          await this.until(started);
          break;
        } catch (err) {
          // A free port can be taken between picking it and etcd binding it
          // (another process's listener, or a connection's local port): that
          // start is retried on fresh ports (it cleaned up after itself).
          // An interruption or any other failure is not retried.
          if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
          this.log.warn({ event: 'demo.etcd.port_taken', attempt, err: String(err).slice(0, 300) }, 'a port of the local etcd was taken before etcd bound it: starting on fresh ports');
        }
      }
      this.record('etcd.started', { members: 3, endpoints: this.endpoints, dataRoot: cluster.dataRoot, pids: cluster.pids }, `started a local 3-member etcd cluster at ${this.endpoints.join(',')}`);
    }
    this.client = createEtcdClient(opts.etcd ?? { endpoints: this.endpoints });
    if (opts.ui) {
      const ui = opts.ui;
      this.dashboard = Dashboard.start(this.client, { listen: ui.listen, scrape: ui.scrape, prefix: opts.prefix, service: opts.service });
      const d = await this.until(this.dashboard);
      this.record('dashboard.started', { url: d.url });
      ui.onUrl(d.url);
    }

    for (let i = 0; i < 3; i++) await this.until(this.startServer('started'));
    const target = meshTarget(opts.prefix, opts.service);
    const channel = openGreeterClient(target, this.client, { name: 'demo', config: { lb: opts.lb, loadAware: opts.loadAware } });
    const greeter = channel.greeter;
    this.checkNotInterrupted();
    this.setState('running');

    const abort = this.loadAbort;
    const ticks: LoadTick[] = [];
    // --duration covers the whole demo: the load gets what start-up left of it.
    const loadStart = Date.now();
    const loadMs = Math.max(5_000, opts.durationMs - (loadStart - this.start));
    const resolverMarkers = opts.collectReport ? new ResolverMarkers(this.client, `${opts.prefix}/${opts.service}/`) : undefined;
    this.loadOrigin = performance.now();
    resolverMarkers?.setOrigin(this.loadOrigin);
    const load = runLoad({
      client: greeter,
      concurrency: opts.concurrency,
      durationMs: loadMs,
      deadlineMs: 1000,
      name: 'demo',
      signal: abort.signal,
      onTick: (t) => {
        ticks.push(t);
        this.view?.render(t, `leader=${this.leader ?? '-'} index=${this.indexPercent ?? '-'}%  `);
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
      if (!(await this.sleepUntil(at(fraction), abort.signal))) break;
      try {
        await this.until(step());
      } catch (err) {
        // Interrupted mid-step: the load (aborted too) still reports what ran.
        if (!(err instanceof DemoInterrupted)) throw err;
        break;
      }
    }
    const report = await load;
    resolverMarkers?.close();
    this.loadOrigin = undefined;
    channel.close();
    this.record('load.finished', { ok: report.ok, failed: report.failed, rps: report.rps }, `load finished: ${report.ok} ok, ${report.failed} failed, ${report.rps} calls/s`);
    const forReport = opts.collectReport ? { ticks, markers: [...this.markers, ...(resolverMarkers?.markers ?? [])] } : {};
    return { ok: report.ok, failed: report.failed, load: report, events: this.events, leaders: this.leaders, runId: this.runId, ...forReport };
  }

  private killed: DemoServer | undefined;
  /** performance.now() when the load began, while it runs: demo steps are report markers then. */
  private loadOrigin: number | undefined;
  private readonly markers: LoadMarker[] = [];

  private async killLeaderOrFirst(ticks: LoadTick[]): Promise<void> {
    const victim = this.servers.find((s) => s.addr === this.leader) ?? this.servers[0];
    const wasLeader = victim.addr === this.leader;
    victim.proc.kill('SIGKILL');
    await victim.exited;
    this.servers.splice(this.servers.indexOf(victim), 1);
    this.killed = victim;
    this.record('server.killed', { addr: victim.addr, signal: 'SIGKILL', wasLeader }, `SIGKILL ${victim.addr}${wasLeader ? ' (the leader)' : ''}: its lease will expire; hedged calls move to the others at once`);
    const from = ticks.length;
    void waitFor('traffic leaves', () => ticks.slice(from + 1).find((t) => t.ok > 0 && !t.backends[victim.addr]), 10_000, 100)
      .then((t) => this.record('traffic.left', { addr: victim.addr, second: t.second, shares: shares(t) }, `traffic left ${victim.addr}: ${fmtShares(t)}`))
      .catch(() => undefined);
  }

  private async restartKilled(ticks: LoadTick[]): Promise<void> {
    const k = this.killed;
    if (!k) return;
    const s = await this.startServer('restarted', k.port);
    const from = ticks.length;
    void waitFor('traffic returns', () => ticks.slice(from).find((t) => share(t, s.addr) >= 0.1), 10_000, 100)
      .then((t) => this.record('traffic.returned', { addr: s.addr, second: t.second, shares: shares(t) }, `traffic returned to ${s.addr}: ${fmtShares(t)}`))
      .catch(() => undefined);
  }

  private async addFourth(ticks: LoadTick[]): Promise<void> {
    const s = await this.startServer('added');
    const from = ticks.length;
    void waitFor('traffic reaches the fourth', () => ticks.slice(from).find((t) => share(t, s.addr) >= 0.15), 10_000, 100)
      .then((t) => this.record('traffic.rebalanced', { addr: s.addr, second: t.second, shares: shares(t) }, `traffic rebalanced over ${Object.keys(t.backends).length} backends: ${fmtShares(t)}`))
      .catch(() => undefined);
  }

  private async startServer(how: 'started' | 'restarted' | 'added', port?: number): Promise<DemoServer> {
    const p = port ?? (await freePort());
    const args = ['server', '--port', String(p), '--etcd', this.endpoints.join(','), '--prefix', this.opts.prefix, '--service', this.opts.service, '--ttl', '3', '--elect', this.election, ...(this.opts.ui ? ['--metrics', '127.0.0.1:0'] : [])];
    const addr = `127.0.0.1:${p}`;
    let serving: (() => void) | undefined;
    const mesh = this.spawnMesh(args, (l) => {
      this.onServerLog(addr, l);
      if (l.event === 'server.state' && l.to === 'SERVING') serving?.();
    });
    const proc = mesh.proc;
    const exited = new Promise<void>((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('exit', () => r())));
    const server: DemoServer = { addr, port: p, proc, exited };
    this.servers.push(server);
    this.log.info({ event: 'demo.server.starting', addr, pid: proc.pid }, `starting greeter ${addr}`);
    await new Promise<void>((resolve, reject) => {
      serving = () => {
        clearTimeout(timer);
        resolve();
      };
      proc.once('exit', (code, signal) => {
        // Stopped by our own cleanup (Ctrl-C while it started): an interruption, not a greeter failure.
        if (this.state === 'stopping' || this.state === 'stopped' || this.opts.signal?.aborted) reject(new DemoInterrupted(String(this.opts.signal?.reason ?? 'cleanup')));
        else reject(new Error(`greeter ${addr} exited with ${code ?? signal} before serving`));
      });
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`greeter ${addr} did not start serving within 20 s`));
      }, 20_000);
      proc.once('exit', () => clearTimeout(timer));
    });
    this.record(`server.${how}`, { addr, pid: proc.pid }, `greeter ${addr} ${how} and registered (${this.servers.length} running)`);
    return server;
  }

  /** Server log lines the demo narrates (leadership and the index job). */
  private onServerLog(addr: string, l: LogLine): void {
    switch (l.event) {
      case 'index.leader': {
        const from = this.leader;
        this.leader = addr;
        this.leaders.push(addr);
        this.record(from ? 'leader.changed' : 'leader.elected', { from, to: addr }, from ? `leadership moved ${from} -> ${addr}` : `${addr} elected leader`);
        break;
      }
      case 'index.progress':
        this.indexPercent = l.percent as number;
        if (l.percent === 100 || (l.percent as number) % 50 === 0) this.record('index.progress', { by: addr, percent: l.percent }, `index build at ${l.percent}% (leader ${addr})`);
        break;
      case 'index.loaded':
        this.record('index.loaded', { by: addr, builtBy: l.builtBy }, `${addr} loaded the index built by ${l.builtBy}`);
        break;
      default:
    }
  }

  private async sleepUntil(when: number, signal: AbortSignal): Promise<boolean> {
    while (Date.now() < when) {
      if (signal.aborted) return false;
      await new Promise((r) => setTimeout(r, Math.min(100, when - Date.now())));
    }
    return !signal.aborted;
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
    this.hurried = true;
    for (const c of this.children) c.kill('SIGKILL');
  }

  private async doCleanup(): Promise<void> {
    this.setState('stopping');
    this.loadAbort.abort();
    this.view?.clear();
    const alive = this.servers.filter((s) => this.children.has(s.proc));
    for (const s of alive) s.proc.kill(this.hurried ? 'SIGKILL' : 'SIGTERM');
    const timer = setTimeout(() => alive.forEach((s) => s.proc.kill('SIGKILL')), 3000);
    await Promise.all(alive.map((s) => s.exited));
    clearTimeout(timer);
    // The page goes before etcd does, so it never shows an etcd being torn down.
    await this.dashboard?.then((d) => d.close(), () => undefined);
    // Against an existing cluster, leave nothing of this run behind in it (bounded: etcd may be the reason we stop).
    if (this.client && !this.cluster) await withTimeout(this.clearDemoKeys(), 3000).catch((err) => this.log.warn({ event: 'demo.cleanup_keys_failed', err: String(err) }, `could not delete this run's keys (${this.election})`));
    this.client?.close();
    await this.cluster?.stop();
    this.reaper?.done();
    this.setState('stopped');
    this.record('cleanup.done', { servers: alive.length, etcdStopped: Boolean(this.cluster) }, 'stopped every greeter' + (this.cluster ? ', the etcd cluster, and removed its data dirs' : ''));
  }

  /**
   * Last resort, synchronous (process 'exit', a forced exit): SIGKILL every
   * child, wait (at most 3 s) until none runs, remove the data dirs.
   */
  killNow(): void {
    const pids = [...this.children].flatMap((c) => (c.pid === undefined ? [] : [c.pid]));
    for (const c of this.children) c.kill('SIGKILL');
    const until = performance.now() + 3000;
    while (pids.some(isRunning) && performance.now() < until) sleepSync(10);
    if (this.cluster) rmSync(this.cluster.dataRoot, { recursive: true, force: true });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The environment of a child the demo starts: the etcd TLS files and
 * credentials of the demo's own connection, as etcdctl names them
 * (ETCDCTL_*), which every mesh command reads when its flag is absent.
 * Never argv: `ps` shows any process's command line to every user. Each
 * variable the demo's connection lacks is removed, so a child never
 * authenticates with something the demo itself did not use.
 */
export function credentialEnv(etcd: EtcdConfig | undefined): Record<string, string | undefined> {
  return {
    ETCDCTL_CACERT: etcd?.source.cacert,
    ETCDCTL_CERT: etcd?.source.cert,
    ETCDCTL_KEY: etcd?.source.key,
    ETCDCTL_USER: etcd?.auth?.username,
    ETCDCTL_PASSWORD: etcd?.auth?.password,
  };
}

/** One backend's share of a second's calls, 0..1. */
function share(t: LoadTick, addr: string): number {
  return (t.backends[addr] ?? 0) / (t.ok + t.failed || 1);
}

function shares(t: LoadTick): Record<string, number> {
  const total = t.ok + t.failed || 1;
  return Object.fromEntries(Object.entries(t.backends).map(([b, n]) => [b, Math.round((1000 * n) / total) / 10]));
}

function fmtShares(t: LoadTick): string {
  return Object.entries(shares(t))
    .sort()
    .map(([b, p]) => `${b} ${p}%`)
    .join(', ');
}
