import { freePort } from '../demo/free-port';
import { MeshProcess, type LogLine } from '../demo/mesh-process';

export type { LogLine };

/**
 * A `mesh server` the bench starts, on the shared MeshProcess helper (the
 * one tests and the demo use): JSON logs parsed from stderr so the bench can
 * wait for `server.state` → SERVING and read `registration.revoked`. Every
 * instance is tracked until it exits, so the bench leaves nothing behind,
 * even on Ctrl-C; an exit the bench did not cause is reported, since the
 * figures after it are not valid.
 */
export class ServerProcess {
  static readonly all = new Set<ServerProcess>();
  private readonly mesh: MeshProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Set when the bench itself signals the server; any other exit is reported. */
  private expected = false;

  private constructor(
    readonly port: number,
    readonly registered: boolean,
    etcd: string,
    prefix: string,
    service: string,
  ) {
    const args = ['server', '--port', String(port), '--etcd', etcd, '--prefix', prefix, '--service', service];
    if (!registered) args.push('--no-register');
    this.mesh = new MeshProcess(args, {}, { stdout: 'ignore' });
    ServerProcess.all.add(this);
    this.exited = this.mesh.exited.then((r) => {
      ServerProcess.all.delete(this);
      if (!this.expected) {
        const drain = this.logs.find((l) => l.event === 'server.state' && l.to === 'DRAINING');
        process.stderr.write(
          `bench: server ${this.addr} (pid ${this.mesh.proc.pid}) exited on its own: code ${r.code}, signal ${r.signal}${drain ? `, ${String(drain.reason)}` : ''}; the figures after this point are not valid\n`,
        );
      }
      return r;
    });
  }

  /** The child process, for signals that are not an end (SIGSTOP/SIGCONT). */
  get proc(): MeshProcess['proc'] {
    return this.mesh.proc;
  }

  /** Spawn a server on a free loopback port; resolves once it is SERVING (and registered unless `register` is false). */
  static async start(opts: { etcd: string; prefix: string; service: string; register: boolean }): Promise<ServerProcess> {
    const s = new ServerProcess(await freePort(), opts.register, opts.etcd, opts.prefix, opts.service);
    await s.waitForLog((l) => l.event === 'server.state' && l.to === 'SERVING', 30_000);
    return s;
  }

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  get logs(): LogLine[] {
    return this.mesh.logs;
  }

  get running(): boolean {
    return this.mesh.running;
  }

  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    return this.mesh.waitForLogLine(pred, timeoutMs, `server ${this.addr} log`, 10);
  }

  kill(sig: NodeJS.Signals = 'SIGTERM'): void {
    this.expected = true;
    this.mesh.kill(sig);
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    this.expected = true;
    await this.mesh.stop(graceMs);
  }

  /** Synchronous last resort (exit handler): SIGKILL every server still running. */
  static killAllNow(): void {
    for (const s of ServerProcess.all) s.expected = true;
    MeshProcess.killAllNow();
  }
}

/** Start `n` servers concurrently (a few at a time, so start-up does not starve the machine). */
export async function startServers(n: number, opts: { etcd: string; prefix: string; service: string; register: boolean }, parallel = 4): Promise<ServerProcess[]> {
  const out: ServerProcess[] = [];
  for (let i = 0; i < n; i += parallel) {
    const batch = await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, () => ServerProcess.start(opts)));
    out.push(...batch);
  }
  return out;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
