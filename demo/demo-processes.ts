import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { LocalEtcdCluster } from './etcd-local';
import { freePort } from './free-port';
import { MeshProcess, type LogLine } from './mesh-process';
import { isRunning, Reaper, sleepSync } from './reaper';
import { DemoInterrupted, type DemoInterruption } from './demo-interruption';
import type { EtcdConfig } from '../core/etcd-config';
import { componentLogger } from '../core/logger';

/** A greeter the demo started: where it serves, and its process. */
export interface DemoGreeter {
  addr: string;
  port: number;
  mesh: MeshProcess;
}

export interface DemoProcessesOptions {
  /** The demo's etcd connection, when it is an existing cluster: its credentials go to the greeters (see credentialEnv). */
  etcd: EtcdConfig | undefined;
  interruption: DemoInterruption;
  /** Every JSON log line of every greeter, with the greeter's address. */
  onGreeterLog: (addr: string, line: LogLine) => void;
}

/**
 * The demo's process control: its local etcd members, its greeters, and the
 * guard process (demo/reaper.ts) that cleans up if mesh itself dies
 * (SIGKILL). Contract: every child is told to the guard from the moment it
 * is spawned; nothing is spawned once stopping has begun; children run in
 * sessions of their own (a terminal's Ctrl-C or hang-up reaches only mesh,
 * which stops them in order). Greeters are tracked MeshProcesses (the roster
 * here says which is which); etcd members are tracked by their cluster.
 */
export class DemoProcesses {
  private readonly log = componentLogger('demo');
  /** The greeters started and not killed by a step, in order (one that failed to start stays: it is dead). */
  readonly greeters: DemoGreeter[] = [];
  private cluster: LocalEtcdCluster | undefined;
  private reaper: Reaper | undefined;
  private stopping = false;
  private hurried = false;

  constructor(private readonly opts: DemoProcessesOptions) {}

  /** The local etcd cluster, once its start began (none with --etcd). */
  get localEtcd(): LocalEtcdCluster | undefined {
    return this.cluster;
  }

  /** Start the guard process; before any child. */
  startGuard(): void {
    this.reaper = Reaper.start();
  }

  /** Tell the guard about `proc` now, and again once it exited. */
  private guard(proc: ChildProcess): void {
    if (proc.pid === undefined) return;
    const pid = proc.pid;
    this.reaper?.tell(`pid ${pid}`);
    proc.once('exit', () => this.reaper?.tell(`gone ${pid}`));
  }

  /**
   * A local `members`-member etcd, in sessions of its own, its data root
   * told to the guard before any member runs. `onStarting` hears of each
   * attempt before its members are spawned.
   */
  async startLocalEtcd(members: number, onStarting: (cluster: LocalEtcdCluster, attempt: number) => void): Promise<LocalEtcdCluster> {
    for (let attempt = 1; ; attempt++) {
      const cluster = await LocalEtcdCluster.create(members, [], { dataRootPrefix: 'etcd-mesh-demo-', detached: true });
      this.cluster = cluster;
      this.reaper?.tell(`dir ${JSON.stringify(cluster.dataRoot)}`);
      onStarting(cluster, attempt);
      this.opts.interruption.check();
      const started = cluster.startMembers();
      for (const m of cluster.members) if (m.proc) this.guard(m.proc);
      try {
        await this.opts.interruption.until(started);
        return cluster;
      } catch (err) {
        // A free port can be taken between picking it and etcd binding it
        // (another process's listener, or a connection's local port): that
        // start is retried on fresh ports (it cleaned up after itself).
        // An interruption or any other failure is not retried.
        if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
        this.log.warn({ event: 'demo.etcd.port_taken', attempt, err: String(err).slice(0, 300) }, 'a port of the local etcd was taken before etcd bound it: starting on fresh ports');
      }
    }
  }

  /**
   * Start a greeter (`mesh server ARGS` on `port`, else a free one) and
   * resolve once it is SERVING. Refused once stopping has begun; etcd
   * credentials in its environment, never argv. An exit before serving
   * rejects: DemoInterrupted when our own stopping caused it.
   */
  async startGreeter(args: (port: number) => string[], port?: number): Promise<DemoGreeter> {
    const p = port ?? (await freePort());
    const addr = `127.0.0.1:${p}`;
    if (this.stopping) throw new DemoInterrupted(this.opts.interruption.reasonOr('cleanup'));
    let serving: (() => void) | undefined;
    const mesh = new MeshProcess(args(p), credentialEnv(this.opts.etcd), {
      detached: true,
      stdout: 'ignore',
      onSpawn: (proc) => this.guard(proc),
      onLog: (l) => {
        this.opts.onGreeterLog(addr, l);
        if (l.event === 'server.state' && l.to === 'SERVING') serving?.();
      },
    });
    const greeter: DemoGreeter = { addr, port: p, mesh };
    this.greeters.push(greeter);
    const proc = mesh.proc;
    this.log.info({ event: 'demo.server.starting', addr, pid: proc.pid }, `starting greeter ${addr}`);
    await new Promise<void>((resolve, reject) => {
      serving = () => {
        clearTimeout(timer);
        resolve();
      };
      proc.once('exit', (code, signal) => {
        // Stopped by our own cleanup (Ctrl-C while it started): an interruption, not a greeter failure.
        if (this.stopping || this.opts.interruption.aborted) reject(new DemoInterrupted(this.opts.interruption.reasonOr('cleanup')));
        else reject(new Error(`greeter ${addr} exited with ${code ?? signal} before serving`));
      });
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`greeter ${addr} did not start serving within 20 s`));
      }, 20_000);
      proc.once('exit', () => clearTimeout(timer));
    });
    return greeter;
  }

  /** SIGKILL a greeter (a step of the scenario), wait for its exit, and take it off the roster. */
  async killGreeter(g: DemoGreeter): Promise<void> {
    g.mesh.kill('SIGKILL');
    await g.mesh.exited;
    this.greeters.splice(this.greeters.indexOf(g), 1);
  }

  /** Greeters still running. */
  private running(): DemoGreeter[] {
    return this.greeters.filter((g) => g.mesh.running);
  }

  /**
   * Stopping begins (nothing is spawned from now on): SIGTERM every greeter
   * still running (SIGKILL after 3 s, or at once after hurry()), and resolve
   * once all exited, with how many there were.
   */
  async stopGreeters(): Promise<number> {
    this.stopping = true;
    const alive = this.running();
    for (const g of alive) g.mesh.kill(this.hurried ? 'SIGKILL' : 'SIGTERM');
    const timer = setTimeout(() => alive.forEach((g) => g.mesh.kill('SIGKILL')), 3000);
    await Promise.all(alive.map((g) => g.mesh.exited));
    clearTimeout(timer);
    return alive.length;
  }

  /** Kill the etcd members and remove their data dirs; the guard is then told it has nothing to do. */
  async stopEtcdAndGuard(): Promise<void> {
    await this.cluster?.stop();
    this.reaper?.done();
  }

  /** A second Ctrl-C: SIGKILL every child now instead of waiting for greeters to drain; stopping then ends at once. */
  hurry(): void {
    this.hurried = true;
    this.killEveryChild();
  }

  private killEveryChild(): number[] {
    const alive = this.running();
    for (const g of alive) g.mesh.proc.kill('SIGKILL');
    const pids = [...alive.map((g) => g.mesh.pid), ...(this.cluster?.pids ?? [])];
    this.cluster?.killNow();
    return pids;
  }

  /**
   * Last resort, synchronous (process 'exit', a forced exit): SIGKILL every
   * child, wait (at most 3 s) until none runs, remove the data dirs.
   */
  killNow(): void {
    const pids = this.killEveryChild();
    const until = performance.now() + 3000;
    while (pids.some(isRunning) && performance.now() < until) sleepSync(10);
    if (this.cluster) rmSync(this.cluster.dataRoot, { recursive: true, force: true });
  }
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
