import { spawn, type ChildProcess, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port';
import { waitFor } from './poll';

const execFileP = promisify(execFile);

export interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  /** host:port of the client URL. */
  endpoint: string;
  dataDir: string;
  proc: ChildProcess | undefined;
  log: string[];
  /** Plain-http URL serving /health when clients use TLS (`--listen-metrics-urls`). */
  metricsUrl?: string;
}

/** Client-facing TLS for a LocalEtcdCluster (peers stay plain http on loopback). */
export interface LocalEtcdTls {
  /** etcd's server certificate and key (PEM); the certificate must name 127.0.0.1. */
  cert: string;
  key: string;
  /** CA that signed the certificates: etcdctl's --cacert, and etcd's --trusted-ca-file with clientCertAuth. */
  ca: string;
  /** Require client certificates signed by `ca` (etcd --client-cert-auth). */
  clientCertAuth?: boolean;
  /** Client certificate and key that etcdctl() uses (needed with clientCertAuth). */
  clientCert?: string;
  clientKey?: string;
}

export interface LocalEtcdOptions {
  /** Serve clients over https with these files; without it everything is plain http, as before. */
  tls?: LocalEtcdTls;
  /** Name prefix of the temporary data root (default `etcd-mesh-test-`). */
  dataRootPrefix?: string;
  /**
   * Run each member in a session of its own, so a terminal's Ctrl-C or
   * hang-up (sent to the whole foreground process group) reaches only the
   * owner, which then stops the members in order (`mesh demo`).
   */
  detached?: boolean;
}

/**
 * A local etcd cluster (1, 3 or 5 members) from the `etcd` binary, on free
 * loopback ports with temporary data dirs: what `mesh demo` and
 * `npm run bench` start when no --etcd is given, and what every test runs
 * against (nothing is mocked). stop() kills every member and removes the
 * data dirs; it is idempotent.
 */
export class LocalEtcdCluster {
  readonly members: EtcdMember[] = [];
  private readonly root: string;
  private initialCluster = '';
  private stopped = false;

  private constructor(
    readonly size: number,
    private readonly extraArgs: string[],
    private readonly options: LocalEtcdOptions = {},
  ) {
    // MESH_ETCD_DATA_ROOT: where the data dirs go (the tests put them on tmpfs: an fsync there costs nothing).
    this.root = mkdtempSync(path.join(process.env.MESH_ETCD_DATA_ROOT || tmpdir(), options.dataRootPrefix ?? 'etcd-mesh-test-'));
  }

  static async start(size = 1, extraArgs: string[] = [], options: LocalEtcdOptions = {}): Promise<LocalEtcdCluster> {
    for (let attempt = 1; ; attempt++) {
      const c = await LocalEtcdCluster.create(size, extraArgs, options);
      try {
        await c.startMembers();
        return c;
      } catch (err) {
        // freePort() proves only that a port was free a moment ago: another
        // process (a parallel test run, a browser) may bind it before etcd
        // does. Such a start is retried on fresh ports; anything else is not.
        if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
      }
    }
  }

  /**
   * The cluster's data root and ports, no process yet: an owner that must be
   * able to clean up at any moment (`mesh demo` on Ctrl-C) holds the object
   * before anything runs, then calls startMembers().
   */
  static async create(size = 1, extraArgs: string[] = [], options: LocalEtcdOptions = {}): Promise<LocalEtcdCluster> {
    const c = new LocalEtcdCluster(size, extraArgs, options);
    const scheme = options.tls ? 'https' : 'http';
    for (let i = 0; i < size; i++) {
      const [cp, pp] = [await freePort(), await freePort()];
      c.members.push({
        name: `m${i}`,
        clientUrl: `${scheme}://127.0.0.1:${cp}`,
        metricsUrl: options.tls ? `http://127.0.0.1:${await freePort()}` : undefined,
        peerUrl: `http://127.0.0.1:${pp}`,
        endpoint: `127.0.0.1:${cp}`,
        dataDir: path.join(c.root, `m${i}`),
        proc: undefined,
        log: [],
      });
    }
    c.initialCluster = c.members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
    return c;
  }

  /** Spawn every member (synchronously, all at once) and wait until all are healthy; on failure, stop() and throw. */
  async startMembers(): Promise<void> {
    try {
      for (let i = 0; i < this.size; i++) this.spawnMember(i, 'new');
      await this.waitHealthy();
    } catch (err) {
      // Half-started clusters are not left behind: kill what runs, remove the dirs.
      await this.stop();
      const tail = this.members.flatMap((m) => m.log).join('').trim().split('\n').slice(-3).join(' | ');
      throw new Error(`local etcd did not start: ${(err as Error).message}${tail ? ` (etcd said: ${tail.slice(0, 500)})` : ''}`);
    }
  }

  /** Pids of the members running now. */
  get pids(): number[] {
    return this.members.flatMap((m) => (m.proc?.pid !== undefined && m.proc.exitCode === null && m.proc.signalCode === null ? [m.proc.pid] : []));
  }

  /** The temporary folder holding every member's data dir (removed by stop()). */
  get dataRoot(): string {
    return this.root;
  }

  /** Comma-separated client endpoints, as --etcd / ETCD_ENDPOINTS take them. */
  get endpoints(): string {
    return this.members.map((m) => m.endpoint).join(',');
  }

  /** Comma-separated client URLs (`https://...` with TLS), as --etcd takes them. */
  get urls(): string {
    return this.members.map((m) => m.clientUrl).join(',');
  }

  /** etcdctl's TLS flags for this cluster (none without TLS). */
  private tlsArgs(): string[] {
    const t = this.options.tls;
    if (!t) return [];
    return [`--cacert=${t.ca}`, ...(t.clientCert && t.clientKey ? [`--cert=${t.clientCert}`, `--key=${t.clientKey}`] : [])];
  }

  private spawnMember(i: number, state: 'new' | 'existing'): void {
    // After stop() nothing may start again: stop() is the owner's guarantee that no member outlives it.
    if (this.stopped) throw new Error('local etcd cluster is stopped');
    const m = this.members[i];
    const t = this.options.tls;
    const tlsArgs = t
      ? // etcd requires client certificates as soon as it has a trusted CA file, so that file goes only with clientCertAuth.
        ['--cert-file', t.cert, '--key-file', t.key, ...(t.clientCertAuth ? ['--trusted-ca-file', t.ca, '--client-cert-auth'] : []), '--listen-metrics-urls', m.metricsUrl!]
      : [];
    const proc = spawn(
      'etcd',
      [
        '--name', m.name,
        '--data-dir', m.dataDir,
        '--listen-client-urls', m.clientUrl,
        '--advertise-client-urls', m.clientUrl,
        '--listen-peer-urls', m.peerUrl,
        '--initial-advertise-peer-urls', m.peerUrl,
        '--initial-cluster', this.initialCluster,
        '--initial-cluster-state', state,
        '--initial-cluster-token', path.basename(this.root),
        // Fast elections keep fault tests short; loopback latency is tiny.
        '--heartbeat-interval', '50',
        '--election-timeout', '500',
        '--logger', 'zap',
        '--log-level', 'warn',
        ...tlsArgs,
        ...this.extraArgs,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], detached: this.options.detached ?? false },
    );
    // No `etcd` binary (or not executable): recorded, and waitHealthy fails with it.
    proc.on('error', (err) => m.log.push(`cannot run etcd: ${err.message}\n`));
    proc.stderr!.on('data', (d: Buffer) => {
      m.log.push(d.toString());
      if (m.log.length > 200) m.log.shift();
    });
    m.proc = proc;
  }

  /** Every running member answers /health. */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    // A member that exits while we wait (a port taken, a bad flag) ends the
    // wait at once with its exit, instead of after the timeout.
    const watched: [ChildProcess, (...args: unknown[]) => void][] = [];
    const died = new Promise<never>((_, reject) => {
      for (const m of this.members) {
        if (!m.proc || m.proc.exitCode !== null || m.proc.signalCode !== null) continue;
        // After stop() an exit is expected; the poll below reports the stop.
        const onExit = (code: unknown, sig: unknown) => {
          if (!this.stopped) reject(new Error(`member ${m.name} exited (${String(code ?? sig)}) before it was healthy`));
        };
        m.proc.once('exit', onExit);
        watched.push([m.proc, onExit]);
      }
    });
    died.catch(() => undefined);
    try {
      await Promise.race([died, this.pollHealthy(timeoutMs)]);
    } finally {
      for (const [proc, onExit] of watched) proc.off('exit', onExit);
    }
    if (this.stopped) throw new Error('local etcd cluster was stopped while starting');
  }

  private async pollHealthy(timeoutMs: number): Promise<void> {
    await waitFor(
      'etcd healthy',
      async () => {
        // stop() ends the wait at once (reported below), not after the timeout.
        if (this.stopped) return true;
        for (const m of this.members) {
          if (!m.proc) continue;
          const res = await fetch(`${m.metricsUrl ?? m.clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
          const body = (await res.json()) as { health: string };
          if (body.health !== 'true') return false;
        }
        return true;
      },
      timeoutMs,
      100,
    );
  }

  /** Index of the current leader, via etcdctl endpoint status. */
  async leaderIndex(): Promise<number> {
    const live = this.members.filter((m) => m.proc).map((m) => (this.options.tls ? m.clientUrl : m.endpoint));
    const { stdout } = await this.etcdctl(['endpoint', 'status', '-w', 'json', `--endpoints=${live.join(',')}`]);
    const rows = JSON.parse(stdout) as { Endpoint: string; Status: { header: { member_id: number }; leader: number } }[];
    const leader = rows.find((r) => r.Status.header.member_id === r.Status.leader);
    if (!leader) throw new Error('no leader');
    return this.members.findIndex((m) => leader.Endpoint.endsWith(m.endpoint));
  }

  signal(i: number, sig: NodeJS.Signals): void {
    this.members[i].proc?.kill(sig);
  }

  /** SIGKILL member i and wait for it to exit. */
  async kill(i: number): Promise<void> {
    const p = this.members[i].proc;
    if (!p) return;
    // A member that already died would never emit 'exit' again.
    const exited = p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
    this.members[i].proc = undefined;
  }

  /** Start member i again on its data dir (after kill). */
  async restart(i: number): Promise<void> {
    this.spawnMember(i, 'existing');
    await this.waitHealthy();
  }

  /** etcdctl (API v3) against this cluster. */
  etcdctl(args: string[], input?: string): Promise<{ stdout: string; stderr: string }> {
    const hasEndpoints = args.some((a) => a.startsWith('--endpoints'));
    const full = hasEndpoints ? args : [`--endpoints=${this.members.filter((m) => m.proc).map((m) => (this.options.tls ? m.clientUrl : m.endpoint)).join(',')}`, ...args];
    full.unshift(...this.tlsArgs());
    const child = execFileP('etcdctl', full, { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 15_000 });
    if (input !== undefined) child.child.stdin!.end(input);
    return child;
  }

  /** SIGKILL every member now, without waiting: a synchronous exit path (stop() is the orderly way, and removes the data dirs). */
  killNow(): void {
    for (const m of this.members) m.proc?.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (let i = 0; i < this.members.length; i++) {
      const p = this.members[i].proc;
      if (p) {
        p.kill('SIGCONT');
        await this.kill(i);
      }
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}
