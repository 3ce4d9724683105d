import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { waitFor } from './poll';

/**
 * The built CLI, dist/cli/main.js, whether this file runs from its source
 * (vitest imports demo/mesh-process.ts) or built (dist/demo/mesh-process.js,
 * under the bench and the demo).
 */
export const MESH_MAIN = path.join(path.extname(__filename) === '.ts' ? path.resolve(__dirname, '..', 'dist') : path.resolve(__dirname, '..'), 'cli', 'main.js');

/** A parsed JSON line: a mesh process's pino log line (stderr), or a peer's event (stdout). */
export type LogLine = Record<string, unknown> & { event?: string; msg?: string };

export interface MeshProcessOptions {
  /**
   * Run in a session (and process group) of its own, so a terminal's Ctrl-C
   * or hang-up reaches only the owner (`mesh demo`). killAll() then signals
   * the whole group, so what the child started in it goes too (`npm run
   * demo`: npm, and the mesh it runs).
   */
  detached?: boolean;
  /** Collect stdout lines (default), discard them, or write them where the owner's go. */
  stdout?: 'pipe' | 'ignore' | 'inherit';
  /** Collect stderr lines (default), or write them where the owner's go. */
  stderr?: 'pipe' | 'inherit';
  /** An IPC channel (`proc.send`, `proc.on('message')`), as fork() opens one: a node child driven by requests. */
  ipc?: boolean;
  /** Called synchronously right after spawn, before any output is read: an owner tracks the child from its first moment. */
  onSpawn?: (proc: ChildProcess) => void;
  /** Every parsed JSON log line, as it arrives. */
  onLog?: (line: LogLine) => void;
  /** Run this executable with `args` as they are, instead of the built mesh CLI (`npm`, etcdctl, node, a peer we did not write). */
  command?: string;
  cwd?: string;
  /** Where the JSON lines come from: stderr (mesh's pino logs, the default) or stdout (peers that print one JSON event a line). */
  logsFrom?: 'stderr' | 'stdout';
}

/**
 * A child process, and the one way tests, the bench and the demo start one:
 * `mesh ...` (the built CLI, JSON logs at info level) unless `command` names
 * another executable. Its stdout lines and parsed JSON lines are collected.
 * Every instance is tracked from spawn until it exited, so `killAll()` (or
 * `killAllNow()` in a synchronous exit path) leaves nothing running; owners
 * keep no process lists of their own.
 */
export class MeshProcess {
  private static readonly all = new Set<MeshProcess>();
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly logs: LogLine[] = [];
  readonly proc: ChildProcess;
  /** Settles once the process exited and its output was read to the end. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** undefined while running; then the exit code (null if killed by a signal). */
  exitCode: number | null | undefined;
  /** The owner sent it a signal through kill(), stop() or killAll(): an exit after that is the owner's doing, not the child's. */
  signalled = false;
  private readonly detached: boolean;
  private readonly logsFromStdout: boolean;

  /** `envChanges`: changes over process.env; a value sets a variable, `undefined` removes it (e.g. credentials a child must not inherit). */
  constructor(args: string[], envChanges: Record<string, string | undefined> = {}, opts: MeshProcessOptions = {}) {
    const env: NodeJS.ProcessEnv = { ...process.env, MESH_LOG_FORMAT: 'json', MESH_LOG_LEVEL: 'info' };
    for (const [k, v] of Object.entries(envChanges)) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const [command, argv] = opts.command ? [opts.command, args] : [process.execPath, [MESH_MAIN, ...args]];
    const stdio: StdioOptions = ['ignore', opts.stdout ?? 'pipe', opts.stderr ?? 'pipe', ...(opts.ipc ? ['ipc' as const] : [])];
    this.detached = opts.detached ?? false;
    this.logsFromStdout = opts.logsFrom === 'stdout';
    this.proc = spawn(command, argv, { env, cwd: opts.cwd, detached: this.detached, stdio });
    opts.onSpawn?.(this.proc);
    MeshProcess.all.add(this);
    // A command that cannot be started says so where its output would be.
    this.proc.once('error', (err) => this.stderr.push(String(err)));
    const parse = (l: string) => {
      if (!l.startsWith('{')) return;
      let parsed: LogLine;
      try {
        parsed = JSON.parse(l) as LogLine;
      } catch {
        return; // not a log line
      }
      this.logs.push(parsed);
      opts.onLog?.(parsed);
    };
    if (this.proc.stdout) readLines(this.proc.stdout, (l) => {
      this.stdout.push(l);
      if (this.logsFromStdout) parse(l);
    });
    if (this.proc.stderr) readLines(this.proc.stderr, (l) => {
      this.stderr.push(l);
      if (!this.logsFromStdout) parse(l);
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

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** The command line as run, for messages. */
  get commandLine(): string {
    return this.proc.spawnargs[1] === MESH_MAIN ? `mesh ${this.proc.spawnargs.slice(2).join(' ')}` : this.proc.spawnargs.join(' ');
  }

  /** The last lines it printed where its JSON lines come from (stdout too, for a peer), for messages. */
  private tail(n = 5): string {
    return (this.logsFromStdout ? [...this.stdout, ...this.stderr] : this.stderr).slice(-n).join('\n');
  }

  /** Every JSON line with this `event`, so far. */
  logsNamed(event: string): LogLine[] {
    return this.logs.filter((l) => l.event === event);
  }

  /** Wait for a log line with this `event` (and matching fields). */
  waitForLog(event: string, match: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<LogLine> {
    return this.waitForLogLine((l) => l.event === event && Object.entries(match).every(([k, v]) => l[k] === v), timeoutMs, `log event ${event} ${JSON.stringify(match)}`);
  }

  /**
   * Wait for a log line `pred` accepts (polled every `everyMs`); rejects as
   * soon as the process exited without one. A rejection names the command
   * and its last lines as they are when it gives up.
   */
  async waitForLogLine(pred: (l: LogLine) => boolean, timeoutMs = 15_000, what = 'log line', everyMs = 25): Promise<LogLine> {
    let r: { line: LogLine | undefined };
    try {
      r = await waitFor(
        what,
        () => {
          const line = this.logs.find(pred);
          return line ? { line } : this.running ? undefined : { line: undefined };
        },
        timeoutMs,
        everyMs,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message} from ${this.commandLine}\n${this.tail()}`);
    }
    if (!r.line) throw new Error(`${this.commandLine} exited (code ${this.exitCode}) without ${what}\n${this.tail()}`);
    return r.line;
  }

  /** The exit code, or a rejection naming what was printed if still running after `ms`. */
  async exitWithin(ms = 20_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still running after ${ms} ms: ${this.commandLine}; printed ${JSON.stringify(this.stdout.slice(-5))}\n${this.stderr.slice(-5).join('\n')}`)), ms);
    });
    try {
      return (await Promise.race([this.exited, timeout])).code;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The signal to this process alone (nothing once it exited). */
  kill(sig: NodeJS.Signals = 'SIGTERM'): void {
    this.signalled = true;
    if (this.exitCode === undefined) this.proc.kill(sig);
  }

  /** The signal to its whole process group (`detached` only), as a terminal sends Ctrl-C or a hang-up; throws ESRCH once none of it is left. */
  killGroup(sig: NodeJS.Signals): void {
    this.signalled = true;
    process.kill(-this.pid, sig);
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves once it exited. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL (after SIGCONT, for stopped ones) every child still running; resolves once all exited. */
  static async killAll(): Promise<void> {
    const ps = [...MeshProcess.all];
    MeshProcess.killAllNow();
    await Promise.all(ps.map((p) => p.exited));
  }

  /** stop() every child still running, side by side; resolves once all exited. */
  static async stopAll(graceMs = 5_000): Promise<void> {
    await Promise.all([...MeshProcess.all].map((p) => p.stop(graceMs)));
  }

  /** Synchronous last resort (a process 'exit' handler): SIGKILL every child still running (a detached one's whole group), without waiting. */
  static killAllNow(): void {
    for (const p of MeshProcess.all) {
      p.signalled = true;
      for (const sig of ['SIGCONT', 'SIGKILL'] as const) {
        try {
          if (p.detached) process.kill(-p.pid, sig);
          else p.proc.kill(sig);
        } catch {
          /* already gone */
        }
      }
    }
  }
}

/** Run `mesh ...` to completion (SIGKILLed after `timeoutMs`). */
export async function runMesh(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string[]; stderr: string[]; logs: LogLine[] }> {
  const p = new MeshProcess(args, env);
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const { code } = await p.exited;
  clearTimeout(timer);
  return { code, stdout: p.stdout, stderr: p.stderr, logs: p.logs };
}

/** Call `cb` with each line of `stream` (the last one too, without its newline). */
export function readLines(stream: NodeJS.ReadableStream, cb: (line: string) => void): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on('line', cb);
}

/**
 * Stop and resume a process until the returned function is called: SIGSTOP
 * for `stopMs`, SIGCONT for `runMs`, so it stays alive and answers late (a
 * slow backend). The returned function ends the cycle with the process
 * running; calling it again does nothing.
 */
export function dutyCycle(proc: ChildProcess, stopMs = 40, runMs = 10): () => void {
  let on = true;
  let timer: NodeJS.Timeout | undefined;
  const step = (stopped: boolean) => {
    if (!on) return;
    proc.kill(stopped ? 'SIGCONT' : 'SIGSTOP');
    timer = setTimeout(() => step(!stopped), stopped ? runMs : stopMs);
  };
  step(false);
  return () => {
    if (!on) return;
    on = false;
    if (timer) clearTimeout(timer);
    proc.kill('SIGCONT');
  };
}
