import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import * as path from 'node:path';
import { errorText } from './common';
import type { Logger } from '../core/logger';
import { monotonicMs } from '../core/etcd-client';
import type { Session } from '../coordination/lock-session';

/**
 * Running CMD for `mesh lock|elect|queue pop -- CMD`: in a process group of
 * its own, watched by a watchdog process so it never outlives mesh (queue)
 * or its lease (lock, elect), and stopped with SIGTERM then SIGKILL.
 */

/** How long CMD gets to exit after SIGTERM when its lock or leadership is lost, before SIGKILL. */
export const STOP_GRACE_MS = 5_000;

/** 128 + signal number, as a shell reports a process killed by a signal. */
export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (constants.signals[sig] ?? 0);
}

/** A child command with inherited stdio, whose end is a promise of its exit code. */
export interface RunningCommand {
  readonly pid: number | undefined;
  /** Exit code; 128+N if killed by signal N; 127 if it could not be started. */
  readonly exited: Promise<number>;
  readonly done: boolean;
  /** Signal CMD's whole process group. */
  signal(sig: NodeJS.Signals): void;
  /**
   * SIGTERM, then SIGKILL after graceMs, to the process group; resolves with the exit code.
   * Under a lease the grace ends at the lease deadline at the latest (SIGKILL at once past it).
   */
  stop(graceMs: number): Promise<number>;
}

/**
 * Without a lease (queue): if mesh itself dies without cleaning up (SIGKILL,
 * OOM), nobody would stop CMD. A tiny shell holds the read end of a pipe from
 * mesh; when the pipe closes with mesh still owing a cleanup, it stops CMD's
 * process group (SIGTERM, SIGKILL 3 s later). On a normal end mesh kills the
 * watchdog first, so CMD's leftovers are never touched then.
 */
const EOF_WATCHDOG = 'cat >/dev/null; kill -TERM "-$0" 2>/dev/null; sleep 3; kill -KILL "-$0" 2>/dev/null';

/** With a lease (lock, elect): the watchdog process of coordination/lock-watchdog.ts. */
const LEASE_WATCHDOG = path.join(__dirname, '..', 'coordination', 'lock-watchdog.js');

/**
 * CMD is stopped this long before the lease's proven deadline (a tenth of
 * the TTL, at most 250 ms): room for the watchdog's own timer and the
 * SIGSTOP to land before etcd can expire the lease and a next holder start.
 */
export function leaseMarginMs(ttlSeconds: number): number {
  return Math.min(250, ttlSeconds * 100);
}

export interface StartOptions {
  /**
   * Run CMD only within this session's proven validity: a separate watchdog
   * process stops CMD's group (SIGSTOP) when the deadline passes without a
   * confirmed keepalive, even while mesh is stopped; Ctrl-Z (SIGTSTP) stops
   * CMD along with mesh; and stop() never gives CMD time past the deadline.
   */
  lease?: Session;
}

export function startCommand(argv: string[], env: Record<string, string>, log: Logger, opts: StartOptions = {}): RunningCommand {
  let done = false;
  let child: ChildProcess;
  let watchdog: ChildProcess | undefined;
  const lease = opts.lease;
  const margin = lease ? leaseMarginMs(lease.ttlSeconds) : 0;
  /** Monotonic time until which CMD may run (Infinity without a lease). */
  let deadline = lease ? lease.validUntil - margin : Infinity;
  const feed = (line: string) => {
    if (watchdog?.stdin?.writable) watchdog.stdin.write(`${line}\n`);
  };
  const onRenewed = (validUntil: number) => {
    deadline = validUntil - margin;
    feed(`D ${deadline}`);
  };
  // Ctrl-Z: CMD stops with mesh (the watchdog does it, and decides on resume).
  const onTstp = () => {
    log.info({ event: 'cmd.pause', pid: child.pid }, 'SIGTSTP: stopping CMD, then mesh');
    if (watchdog?.stdin?.writable) watchdog.stdin.write('P\n', () => process.kill(process.pid, 'SIGSTOP'));
    else process.kill(process.pid, 'SIGSTOP');
  };
  const onCont = () => {
    log.info({ event: 'cmd.resume_requested', pid: child.pid, leaseAlive: lease?.alive }, 'SIGCONT: CMD resumes if the lease is still proven valid');
    feed('R');
  };
  const exited = new Promise<number>((resolve) => {
    const finish = (code: number) => {
      if (done) return;
      done = true;
      lease?.off('renewed', onRenewed);
      if (lease) {
        process.off('SIGTSTP', onTstp);
        process.off('SIGCONT', onCont);
      }
      watchdog?.kill('SIGKILL');
      resolve(code);
    };
    // Own process group, so that stopping CMD stops everything it started,
    // and a terminal's Ctrl-C reaches CMD once (forwarded by mesh), not twice.
    child = spawn(argv[0], argv.slice(1), { stdio: 'inherit', env: { ...process.env, ...env }, detached: true });
    child.once('error', (err) => {
      process.stderr.write(`mesh: cannot run ${argv[0]}: ${errorText(err)}\n`);
      finish(127);
    });
    child.once('exit', (code, sig) => {
      const c = code ?? (sig ? signalExitCode(sig) : 1);
      log.info({ event: 'cmd.exited', pid: child.pid, code, signal: sig }, `CMD exited with ${c}`);
      finish(c);
    });
  });
  if (child!.pid !== undefined) {
    const pgid = String(child!.pid);
    // Its own process group too: a terminal's Ctrl-Z must not stop the watchdog.
    watchdog = lease
      ? spawn(process.execPath, [LEASE_WATCHDOG, pgid], { stdio: ['pipe', 'pipe', 'ignore'], detached: true })
      : spawn('sh', ['-c', EOF_WATCHDOG, pgid], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    watchdog.on('error', (err) => log.warn({ event: 'cmd.watchdog_failed', err: String(err) }, 'no watchdog: CMD would outlive a killed or stopped mesh'));
    watchdog.stdin?.on('error', () => undefined); // the watchdog gone: its exit is logged below
    watchdog.once('exit', (code, sig) => {
      if (!done) log.error({ event: 'cmd.watchdog_exited', code, signal: sig, pid: child.pid }, 'the watchdog exited while CMD runs: CMD is no longer stopped if mesh is');
    });
    watchdog.unref();
    (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    if (lease) {
      watchdog.stdout!.setEncoding('utf8');
      watchdog.stdout!.on('data', (d: string) => {
        for (const line of d.split('\n').filter(Boolean)) log.warn({ event: 'cmd.watchdog', pid: child.pid, action: line.split(' ')[0], reason: line.slice(line.indexOf(' ') + 1) }, `watchdog: CMD ${line}`);
      });
      (watchdog.stdout as unknown as { unref?: () => void }).unref?.();
      feed(`D ${deadline}`);
      lease.on('renewed', onRenewed);
      process.on('SIGTSTP', onTstp);
      process.on('SIGCONT', onCont);
    }
  }
  log.info({ event: 'cmd.started', pid: child!.pid, argv, leaseGuarded: lease !== undefined }, 'CMD started');
  const signalGroup = (sig: NodeJS.Signals) => {
    if (done || child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      child.kill(sig);
    }
  };
  return {
    get pid() {
      return child.pid;
    },
    exited,
    get done() {
      return done;
    },
    signal: signalGroup,
    async stop(graceMs: number) {
      // Past the lease deadline CMD must not run again, not even to handle SIGTERM.
      const grace = Math.min(graceMs, Math.max(0, deadline - monotonicMs()));
      if (grace <= 0) {
        log.warn({ event: 'cmd.kill', pid: child.pid }, 'the lease deadline has passed: SIGKILL to CMD');
        signalGroup('SIGKILL');
        return exited;
      }
      signalGroup('SIGTERM');
      const t = setTimeout(() => {
        if (!done) {
          log.warn({ event: 'cmd.kill', pid: child.pid, graceMs: grace }, `CMD still running ${grace} ms after SIGTERM: SIGKILL`);
          signalGroup('SIGKILL');
        }
      }, grace);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
