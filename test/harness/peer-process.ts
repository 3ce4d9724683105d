import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './ports';
import { readLines } from '../../demo/mesh-process';

/** One JSON object a peer printed on a stdout line. */
export type PeerEvent = Record<string, unknown> & { event?: string };

/**
 * A non-mesh peer (the Python C-core greeter, the Go greeter server or
 * client) as a child process whose stdout is one JSON event a line. Every
 * instance is tracked so `killAll()` leaves nothing running after a file.
 */
export class PeerProcess {
  private static readonly all = new Set<PeerProcess>();
  readonly events: PeerEvent[] = [];
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitCode: number | null | undefined;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    env: Record<string, string> = {},
  ) {
    this.proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    PeerProcess.all.add(this);
    readLines(this.proc.stdout!, (l) => {
      this.stdout.push(l);
      if (l.startsWith('{')) {
        try {
          this.events.push(JSON.parse(l) as PeerEvent);
        } catch {
          /* not an event */
        }
      }
    });
    readLines(this.proc.stderr!, (l) => this.stderr.push(l));
    this.exited = new Promise((resolve) => {
      this.proc.once('error', (err) => {
        this.stderr.push(String(err));
      });
      this.proc.once('close', (code, signal) => {
        this.exitCode = code;
        PeerProcess.all.delete(this);
        resolve({ code, signal });
      });
    });
  }

  /** Wait for an event with this name; rejects naming what the peer printed if it exits or times out first. */
  waitForEvent(event: string, timeoutMs = 15_000): Promise<PeerEvent> {
    return waitFor(`${this.name}: event ${event}\n${[...this.stdout, ...this.stderr].slice(-8).join('\n')}`, () => {
      const found = this.events.find((e) => e.event === event);
      if (found) return found;
      if (this.exitCode !== undefined) throw new Error(`${this.name} exited ${this.exitCode}`);
      return undefined;
    }, timeoutMs);
  }

  eventsNamed(event: string): PeerEvent[] {
    return this.events.filter((e) => e.event === event);
  }

  /** Exit code once it exits, or a rejection naming its output after `ms`. */
  async exitWithin(ms: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} still running after ${ms} ms: ${[...this.stdout, ...this.stderr].slice(-8).join('\n')}`)), ms);
    });
    try {
      return (await Promise.race([this.exited, timeout])).code;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. Idempotent. */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  static async killAll(): Promise<void> {
    const ps = [...PeerProcess.all];
    for (const p of ps) p.proc.kill('SIGKILL');
    await Promise.all(ps.map((p) => p.exited));
  }
}
