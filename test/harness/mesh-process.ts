import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { waitFor } from './ports';

export const REPO = path.resolve(__dirname, '..', '..');
export const MESH_MAIN = path.join(REPO, 'dist', 'cli', 'main.js');

/** A parsed pino line from a mesh process's stderr. */
export type LogLine = Record<string, unknown> & { event?: string; msg?: string };

/**
 * A `mesh ...` child process (the built CLI), with its stdout lines and
 * parsed JSON log lines collected for assertions. Every instance is
 * tracked so `killAll()` leaves nothing running after a test file.
 */
export class MeshProcess {
  private static readonly all = new Set<MeshProcess>();
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly logs: LogLine[] = [];
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitCode: number | null | undefined;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.proc = spawn(process.execPath, [MESH_MAIN, ...args], {
      env: { ...process.env, MESH_LOG_FORMAT: 'json', MESH_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    MeshProcess.all.add(this);
    lines(this.proc.stdout!, (l) => this.stdout.push(l));
    lines(this.proc.stderr!, (l) => {
      this.stderr.push(l);
      if (l.startsWith('{')) {
        try {
          this.logs.push(JSON.parse(l) as LogLine);
        } catch {
          /* not a log line */
        }
      }
    });
    this.exited = new Promise((resolve) =>
      this.proc.once('close', (code, signal) => {
        this.exitCode = code;
        MeshProcess.all.delete(this);
        resolve({ code, signal });
      }),
    );
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Wait for a log line with this `event` (and matching fields). */
  waitForLog(event: string, match: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<LogLine> {
    return waitFor(
      `log event ${event} ${JSON.stringify(match)} from mesh ${this.proc.spawnargs.slice(2).join(' ')}\n${this.stderr.slice(-5).join('\n')}`,
      () => this.logs.find((l) => l.event === event && Object.entries(match).every(([k, v]) => l[k] === v)),
      timeoutMs,
    );
  }

  /** The exit code, or a rejection naming what was printed if still running after `ms`. */
  async exitWithin(ms = 20_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still running after ${ms} ms; printed ${JSON.stringify(this.stdout)}`)), ms);
    });
    try {
      return (await Promise.race([this.exited, timeout])).code;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(sig: NodeJS.Signals = 'SIGTERM'): void {
    if (this.exitCode === undefined) this.proc.kill(sig);
  }

  static async killAll(): Promise<void> {
    const ps = [...MeshProcess.all];
    for (const p of ps) {
      p.proc.kill('SIGCONT');
      p.proc.kill('SIGKILL');
    }
    await Promise.all(ps.map((p) => p.exited));
  }
}

/** Run `mesh ...` to completion. */
export async function runMesh(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string[]; stderr: string[]; logs: LogLine[] }> {
  const p = new MeshProcess(args, env);
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const { code } = await p.exited;
  clearTimeout(timer);
  return { code, stdout: p.stdout, stderr: p.stderr, logs: p.logs };
}

function lines(stream: NodeJS.ReadableStream, cb: (line: string) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      cb(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  stream.on('end', () => {
    if (buf) cb(buf);
  });
}
