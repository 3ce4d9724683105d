import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { MeshProcess } from '../demo/mesh-process';
import { waitFor } from './harness/ports';

/** Shared by the demo test files: a demo run in a process group of its own, and the check that it left nothing behind. */

export type { LogLine } from '../demo/mesh-process';
import type { LogLine } from '../demo/mesh-process';

/** A `mesh demo` (or `npm run demo`) in its own process group, as a terminal's foreground job is. */
export class DemoRun {
  private static readonly all = new Set<DemoRun>();
  private readonly p: MeshProcess;

  constructor(args: string[], opts: { command?: string; cwd?: string; env?: Record<string, string> } = {}) {
    this.p = new MeshProcess(args, opts.env ?? {}, { detached: true, command: opts.command, cwd: opts.cwd });
    DemoRun.all.add(this);
    void this.p.exited.then(() => DemoRun.all.delete(this));
  }

  get proc(): ChildProcess {
    return this.p.proc;
  }
  get stdout(): string[] {
    return this.p.stdout;
  }
  get stderr(): string[] {
    return this.p.stderr;
  }
  get logs(): LogLine[] {
    return this.p.logs;
  }
  get exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.p.exited;
  }

  async waitForLog(event: string, timeoutMs = 30_000): Promise<LogLine> {
    let exited = false;
    void this.exited.then(() => (exited = true));
    try {
      return await waitFor(
        `log event ${event}`,
        () => {
          const line = this.logs.find((l) => l.event === event);
          // A demo that already ended will not log it: say so now, with what it printed.
          if (!line && exited) throw new Error('the demo exited');
          return line;
        },
        timeoutMs,
        10,
      );
    } catch (err) {
      // The lines as they are now (not when the wait began), to tell what the demo was doing.
      throw new Error(`${(err as Error).message}; exit ${JSON.stringify(this.proc.exitCode ?? this.proc.signalCode)}; last lines:\n${this.stderr.slice(-5).join('\n')}`);
    }
  }

  /** The signal to this process alone. */
  kill(sig: NodeJS.Signals): void {
    this.proc.kill(sig);
  }

  /** The signal to its whole process group, as a terminal sends Ctrl-C or a hang-up. */
  killGroup(sig: NodeJS.Signals): void {
    process.kill(-this.proc.pid!, sig);
  }

  async exitWithin(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`demo still running after ${ms} ms; stderr tail:\n${this.stderr.slice(-5).join('\n')}`)), ms)));
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** What the demo announced before anything ran: its data root and etcd endpoints (local etcd). */
  get etcd(): { dataRoot: string; endpoints: string[] } | undefined {
    const l = this.logs.find((x) => x.event === 'demo.etcd.starting');
    return l && { dataRoot: l.dataRoot as string, endpoints: l.endpoints as string[] };
  }

  /** Addresses of every greeter it spawned. */
  get greeters(): string[] {
    return this.logs.filter((l) => l.event === 'demo.server.starting').map((l) => l.addr as string);
  }

  static killAll(): void {
    for (const r of DemoRun.all) {
      try {
        process.kill(-r.proc.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}

export function portClosed(endpoint: string): Promise<boolean> {
  const [host, port] = endpoint.split(':');
  return new Promise((resolve) => {
    const s = connect(Number(port), host);
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

/** Pids (other than zombies) whose command line mentions any of `needles`. */
export function processesMentioning(needles: string[]): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'latin1').replace(/\0/g, ' ');
      if (needles.some((n) => cmdline.includes(n))) found.push({ pid: Number(entry), cmdline });
    } catch {
      /* exited meanwhile */
    }
  }
  return found;
}

/**
 * Nothing the demo started is left: no process whose command line names
 * its data root (etcd members) or its etcd endpoints (greeters), no data
 * dir, no open etcd or greeter port. `settleMs` > 0 polls that long first
 * (for the guard process, which cleans up after mesh is gone).
 */
export async function leftovers(etcd: { dataRoot: string; endpoints: string[] }, greeters: string[], settleMs = 0): Promise<string[]> {
  const check = async (): Promise<string[]> => {
    const left: string[] = [];
    for (const p of processesMentioning([etcd.dataRoot, etcd.endpoints.join(',')])) left.push(`process ${p.pid}: ${p.cmdline.slice(0, 120)}`);
    if (existsSync(etcd.dataRoot)) left.push(`data dir ${etcd.dataRoot}`);
    for (const ep of [...etcd.endpoints, ...greeters]) if (!(await portClosed(ep))) left.push(`port ${ep} open`);
    return left;
  };
  const until = Date.now() + settleMs;
  for (;;) {
    const left = await check();
    if (left.length === 0 || Date.now() >= until) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}
