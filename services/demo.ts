import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { LocalEtcdCluster } from './etcd-local';
import { freePort } from './free-port';
import { waitFor } from './poll';
import { createGreeterClient } from './greeter-client';
import { runLoad, type LoadReport, type LoadTick } from './load-generator';
import { TrafficView } from './traffic-view';
import { createEtcdClient, type EtcdConnectOptions } from '../balancer/etcd-client';
import { registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';
import { componentLogger } from '../balancer/logger';

/** One thing the demo did or saw, in order; `--json` prints them all. */
export interface DemoEvent {
  /** ms since the demo started. */
  t: number;
  event: string;
  [field: string]: unknown;
}

export interface DemoOptions {
  /** Existing etcd to use; without it a local 3-member cluster is started. */
  etcd?: EtcdConnectOptions;
  /** Load-balancing policy of the load client (default: the mesh's default). */
  lb?: string;
  /** Total run time, ms (the scenario is spread over it). */
  durationMs: number;
  concurrency: number;
  prefix: string;
  service: string;
  /** Election name the greeters campaign on. */
  election: string;
  /** Print the live view / narration (false for --json). */
  view: boolean;
  signal?: AbortSignal;
}

export interface DemoSummary {
  ok: number;
  failed: number;
  load: LoadReport;
  events: DemoEvent[];
  leaders: string[];
}

const MAIN_JS = path.resolve(__dirname, '..', 'cli', 'main.js');

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
 * Teardown is one idempotent `cleanup()`: load stopped, greeters SIGTERMed
 * (SIGKILL after 3 s), etcd members killed and their data dirs removed.
 */
export class Demo {
  private readonly events: DemoEvent[] = [];
  private readonly start = Date.now();
  private readonly log = componentLogger('demo');
  private readonly servers: DemoServer[] = [];
  private cluster: LocalEtcdCluster | undefined;
  private client: Etcd3 | undefined;
  private readonly view: TrafficView | undefined;
  private leader: string | undefined;
  private readonly leaders: string[] = [];
  private indexPercent: number | undefined;
  private cleaning: Promise<void> | undefined;
  private endpoints: string[] = [];

  constructor(private readonly opts: DemoOptions) {
    this.view = opts.view ? new TrafficView() : undefined;
  }

  private record(event: string, fields: Record<string, unknown> = {}, narrate?: string): void {
    const e: DemoEvent = { t: Date.now() - this.start, event, ...fields };
    this.events.push(e);
    this.log.info({ ...fields, event: `demo.${event}` }, narrate ?? event);
    if (narrate) this.view?.note(narrate);
  }

  async run(): Promise<DemoSummary> {
    try {
      return await this.scenario();
    } finally {
      await this.cleanup();
    }
  }

  private async scenario(): Promise<DemoSummary> {
    const { opts } = this;
    if (opts.etcd) {
      this.endpoints = opts.etcd.endpoints;
      this.record('etcd.external', { endpoints: this.endpoints }, `using etcd at ${this.endpoints.join(',')}`);
    } else {
      this.cluster = await LocalEtcdCluster.start(3);
      this.endpoints = this.cluster.members.map((m) => m.endpoint);
      this.record('etcd.started', { members: 3, endpoints: this.endpoints, dataRoot: this.cluster.dataRoot }, `started a local 3-member etcd cluster at ${this.endpoints.join(',')}`);
    }
    this.client = createEtcdClient(opts.etcd ?? { endpoints: this.endpoints });
    // A previous demo against the same etcd may have left a finished index behind.
    await this.clearDemoKeys();

    for (let i = 0; i < 3; i++) await this.startServer('started');
    registerEtcdResolver(this.client, 'demo');
    const greeter = createGreeterClient(`etcd:///${opts.prefix}/${opts.service}`, undefined, { lb: opts.lb }, { 'etcd_mesh.client': 'demo' });

    const abort = new AbortController();
    opts.signal?.addEventListener('abort', () => abort.abort());
    const ticks: LoadTick[] = [];
    // --duration covers the whole demo: the load gets what start-up left of it.
    const loadStart = Date.now();
    const loadMs = Math.max(5_000, opts.durationMs - (loadStart - this.start));
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
    this.record('load.started', { concurrency: opts.concurrency, target: `etcd:///${opts.prefix}/${opts.service}` }, `load client: ${opts.concurrency} calls in flight through etcd:///${opts.prefix}/${opts.service}`);

    const at = (fraction: number) => loadStart + fraction * loadMs;
    // The leader dies early, while it is still building the index (about 6 s).
    const steps: [number, () => Promise<void>][] = [
      [Math.min(0.25, 3000 / loadMs), () => this.killLeaderOrFirst(ticks)],
      [0.5, () => this.restartKilled(ticks)],
      [0.7, () => this.addFourth(ticks)],
    ];
    for (const [fraction, step] of steps) {
      if (!(await this.sleepUntil(at(fraction), abort.signal))) break;
      await step();
    }
    const report = await load;
    greeter.close();
    unregisterEtcdClient('demo');
    this.record('load.finished', { ok: report.ok, failed: report.failed, rps: report.rps }, `load finished: ${report.ok} ok, ${report.failed} failed, ${report.rps} calls/s`);
    return { ok: report.ok, failed: report.failed, load: report, events: this.events, leaders: this.leaders };
  }

  private killed: DemoServer | undefined;

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
    const args = [MAIN_JS, 'server', '--port', String(p), '--etcd', this.endpoints.join(','), '--prefix', this.opts.prefix, '--service', this.opts.service, '--ttl', '3', '--elect', this.opts.election, ...credentialArgs(this.opts.etcd)];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MESH_LOG_FORMAT: 'json', MESH_LOG_LEVEL: 'info' } });
    const addr = `127.0.0.1:${p}`;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    const server: DemoServer = { addr, port: p, proc, exited };
    this.servers.push(server);
    let serving = false;
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      proc.stderr!.setEncoding('utf8');
      proc.stderr!.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.onServerLog(addr, line);
          if (line.includes('"to":"SERVING"')) {
            serving = true;
            clearTimeout(timer);
            resolve();
          }
        }
      });
      proc.once('exit', (code) => reject(new Error(`greeter ${addr} exited with ${code} before serving`)));
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`greeter ${addr} did not start serving within 20 s`));
      }, 20_000);
      proc.once('exit', () => clearTimeout(timer));
      // Ctrl-C while it starts: do not wait for it.
      this.opts.signal?.addEventListener('abort', () => serving || proc.kill('SIGTERM'), { once: true });
    });
    this.record(`server.${how}`, { addr, pid: proc.pid }, `greeter ${addr} ${how} and registered (${this.servers.length} running)`);
    return server;
  }

  /** Server log lines the demo narrates (leadership and the index job). */
  private onServerLog(addr: string, line: string): void {
    if (!line.startsWith('{')) return;
    let l: Record<string, unknown>;
    try {
      l = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
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

  /** The election, progress and index keys of the demo's index job. */
  private async clearDemoKeys(): Promise<void> {
    const c = this.client!;
    const name = this.opts.election;
    await Promise.all([c.delete().prefix(`${name}/`).exec(), c.delete().key(`progress/${name}`).exec(), c.delete().key(`index/${name}`).exec()]);
  }

  /** Stop everything the demo started. Idempotent. */
  cleanup(): Promise<void> {
    if (!this.cleaning) this.cleaning = this.doCleanup();
    return this.cleaning;
  }

  private async doCleanup(): Promise<void> {
    this.view?.clear();
    const alive = [...this.servers];
    for (const s of alive) s.proc.kill('SIGTERM');
    const timer = setTimeout(() => alive.forEach((s) => s.proc.kill('SIGKILL')), 3000);
    await Promise.all(alive.map((s) => s.exited));
    clearTimeout(timer);
    // Against an existing cluster, leave nothing of ours behind in it either.
    if (this.client && !this.cluster) await this.clearDemoKeys().catch(() => undefined);
    this.client?.close();
    await this.cluster?.stop();
    this.record('cleanup.done', { servers: alive.length, etcdStopped: Boolean(this.cluster) }, 'stopped every greeter' + (this.cluster ? ', the etcd cluster, and removed its data dirs' : ''));
  }

  /** Last-resort synchronous kill (process 'exit'): nothing is left running. */
  killNow(): void {
    for (const s of this.servers) s.proc.kill('SIGKILL');
    for (const m of this.cluster?.members ?? []) m.proc?.kill('SIGKILL');
  }
}

/** The etcd TLS/auth flags of the demo, handed on to the greeters it starts. */
function credentialArgs(etcd: EtcdConnectOptions | undefined): string[] {
  if (!etcd) return [];
  const flags: [string, string | undefined][] = [
    ['--cacert', etcd.cacert],
    ['--cert', etcd.cert],
    ['--key', etcd.key],
    ['--user', etcd.user],
    ['--password', etcd.password],
  ];
  return flags.flatMap(([flag, value]) => (value === undefined ? [] : [flag, value]));
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
