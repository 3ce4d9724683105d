import type { ChildProcess } from 'node:child_process';
import { waitFor } from './ports';
import { MeshProcess } from '../../demo/mesh-process';

/** One JSON object a peer printed on a stdout line. */
export type PeerEvent = Record<string, unknown> & { event?: string };

/**
 * A non-mesh peer (the Python C-core greeter, the Go greeter server or
 * client) as a child process whose stdout is one JSON event a line: the
 * shared MeshProcess (spawn, line reading, tracking) running another
 * executable. Every instance is tracked so `killAll()` leaves nothing
 * running after a file.
 */
export class PeerProcess {
  private static readonly all = new Set<PeerProcess>();
  private readonly p: MeshProcess;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    env: Record<string, string> = {},
  ) {
    this.p = new MeshProcess(args, env, { command: cmd, logsFrom: 'stdout' });
    PeerProcess.all.add(this);
    void this.p.exited.then(() => PeerProcess.all.delete(this));
  }

  get proc(): ChildProcess {
    return this.p.proc;
  }
  get events(): PeerEvent[] {
    return this.p.logs;
  }
  get stdout(): string[] {
    return this.p.stdout;
  }
  get stderr(): string[] {
    return this.p.stderr;
  }
  get exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.p.exited;
  }
  get exitCode(): number | null | undefined {
    return this.p.exitCode;
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
  exitWithin(ms: number): Promise<number | null> {
    return this.p.exitWithin(ms);
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. Idempotent. */
  stop(graceMs = 5_000): Promise<void> {
    return this.p.stop(graceMs);
  }

  static async killAll(): Promise<void> {
    const ps = [...PeerProcess.all];
    for (const p of ps) p.p.kill('SIGKILL');
    await Promise.all(ps.map((p) => p.exited));
  }
}
