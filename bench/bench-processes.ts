import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { freePort } from '../demo/free-port';
import { waitFor } from '../demo/poll';

/** The built CLI, `node dist/cli/main.js`. */
export const MESH_MAIN = path.resolve(__dirname, '..', 'cli', 'main.js');

/** A parsed pino line from a server's stderr. */
export type LogLine = Record<string, unknown> & { event?: string };

/**
 * A `mesh server` child process (the pattern of test/harness/mesh-process.ts):
 * JSON logs parsed from stderr so the bench can wait for `server.state` →
 * SERVING and read `registration.revoked`. Every instance is tracked so the
 * bench leaves nothing behind, even on Ctrl-C.
 */
export class ServerProcess {
  static readonly all = new Set<ServerProcess>();
  readonly logs: LogLine[] = [];
  readonly tail: string[] = [];
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;
  /** Set when the bench itself signals the server; any other exit is reported. */
  private expected = false;

  private constructor(
    readonly port: number,
    readonly registered: boolean,
    etcd: string,
    prefix: string,
    service: string,
  ) {
    const args = [MESH_MAIN, 'server', '--port', String(port), '--etcd', etcd, '--prefix', prefix, '--service', service];
    if (!registered) args.push('--no-register');
    this.proc = spawn(process.execPath, args, {
      env: { ...process.env, MESH_LOG_FORMAT: 'json', MESH_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    ServerProcess.all.add(this);
    let buf = '';
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.tail.push(l);
        if (this.tail.length > 20) this.tail.shift();
        if (l.startsWith('{')) {
          try {
            this.logs.push(JSON.parse(l) as LogLine);
          } catch {
            /* not a log line */
          }
        }
      }
    });
    this.exited = new Promise((resolve) =>
      this.proc.once('exit', (code, signal) => {
        this.done = true;
        ServerProcess.all.delete(this);
        if (!this.expected) {
          const drain = this.logs.find((l) => l.event === 'server.state' && l.to === 'DRAINING');
          process.stderr.write(
            `bench: server ${this.addr} (pid ${this.proc.pid}) exited on its own: code ${code}, signal ${signal}${drain ? `, ${String(drain.reason)}` : ''}; the figures after this point are not valid\n`,
          );
        }
        resolve({ code, signal });
      }),
    );
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

  get running(): boolean {
    return !this.done;
  }

  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    return waitFor(
      `server ${this.addr} log\n${this.tail.join('\n')}`,
      () => {
        if (this.done && !this.logs.some(pred)) throw new Error(`server ${this.addr} exited`);
        return this.logs.find(pred);
      },
      timeoutMs,
      10,
    );
  }

  kill(sig: NodeJS.Signals = 'SIGTERM'): void {
    this.expected = true;
    if (!this.done) this.proc.kill(sig);
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.done) return;
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Synchronous last resort (exit handler): SIGKILL every server still running. */
  static killAllNow(): void {
    for (const s of ServerProcess.all) {
      s.expected = true;
      try {
        s.proc.kill('SIGCONT');
        s.proc.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
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
