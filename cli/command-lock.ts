import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { addEtcdOptions, connectEtcd, CommandFailure, errorText, type EtcdFlags } from './common';
import { parseTtl } from './parse';
import { componentLogger, type Logger } from '../core/logger';
import { monotonicMs } from '../core/etcd-client';
import type { Session } from '../coordination/lock-session';
import { EtcdMutex, LockHeldError, LockLostError } from '../coordination/lock';
import { validateCoordinationName } from '../coordination/lock-name';

interface LockFlags extends EtcdFlags {
  ttl: number;
  try?: boolean;
}

/** Exit codes of `mesh lock` besides CMD's own. */
export const EXIT_LOCK_HELD = 3;
export const EXIT_LOCK_LOST = 4;
/** How long CMD gets to exit after SIGTERM when its lock or leadership is lost, before SIGKILL. */
export const STOP_GRACE_MS = 5_000;

/** NAME of lock/elect/queue/barrier: used verbatim as a key prefix (see coordination/lock-name.ts). */
export function parseCoordinationName(value: string): string {
  const bad = validateCoordinationName(value);
  if (bad) throw new InvalidArgumentError(value === '' ? bad : `${JSON.stringify(value)} ${bad}`);
  return value;
}

export function lockCommand(): Command {
  const cmd = new Command('lock')
    .summary('run CMD while holding a distributed lock (fair; excludes etcdctl lock)')
    .description(
      'run CMD while holding the distributed lock NAME and exit with its code; blocking and fair (arrival order). ' +
        'Same keys and algorithm as Go concurrency.Mutex, so it excludes `etcdctl lock NAME` both ways. ' +
        'CMD never runs past the lease\'s proven validity (monotonic clock), even while mesh is stopped: a watchdog process stops it; Ctrl-Z stops CMD with mesh. ' +
        'A waiter that loses its session to an etcd stall queues again. ' +
        `Exit ${EXIT_LOCK_HELD}: --try and the lock is held; exit ${EXIT_LOCK_LOST}: the lock was lost while held and CMD was stopped.`,
    )
    .argument('<name>', 'lock name (keys NAME/<lease hex>)', parseCoordinationName)
    .argument('[cmd...]', 'command and arguments, after --; without one, hold the lock until SIGINT/SIGTERM')
    .addOption(new Option('--ttl <seconds>', 'lease TTL: how long the lock outlives a mesh that died').default(10).argParser(parseTtl))
    .option('--try', `do not wait: exit ${EXIT_LOCK_HELD} at once if the lock is held`)
    .addHelpText('after', '\nExamples:\n  mesh lock backups -- ./backup.sh --full\n  mesh lock --try backups -- ./backup.sh || echo "someone else is backing up"\n\nCMD gets ETCD_LOCK_KEY and ETCD_LOCK_REV (the fencing token), as under etcdctl lock.');
  addEtcdOptions(cmd);
  return cmd.action(async (name: string, argv: string[], flags: LockFlags) => {
    const log = componentLogger('cli', { command: 'lock', lock: name });
    const etcd = await connectEtcd(flags);
    const mutex = new EtcdMutex(etcd, { name, ttlSeconds: flags.ttl, log: componentLogger('lock', { lock: name }) });
    const signals = new SignalRelay(log);
    let code: number;
    try {
      code = await runLocked(mutex, name, argv, flags, signals, log);
    } finally {
      signals.dispose();
      await mutex.release();
      etcd.close();
    }
    process.exit(code);
  });
}

async function runLocked(mutex: EtcdMutex, name: string, argv: string[], flags: LockFlags, signals: SignalRelay, log: Logger): Promise<number> {
  try {
    if (flags.try) await mutex.tryAcquire();
    else await mutex.acquire({ signal: signals.abortSignal });
  } catch (err) {
    if (err instanceof LockHeldError) throw new CommandFailure(`lock ${name} is held by ${err.holderKey} (revision ${err.holderRevision})`, EXIT_LOCK_HELD);
    if (signals.received) {
      log.info({ event: 'lock.wait_interrupted', signal: signals.received }, 'interrupted while waiting; waiter key deleted');
      return argv.length > 0 ? signalExitCode(signals.received) : 0;
    }
    if (err instanceof LockLostError) throw new CommandFailure(err.message, EXIT_LOCK_LOST);
    throw err;
  }
  const lost = new Promise<Error>((resolve) => mutex.once('lost', resolve));
  log.info({ event: 'lock.acquired', key: mutex.key, revision: mutex.revision }, `acquired lock ${name}`);
  if (signals.received) return argv.length > 0 ? signalExitCode(signals.received) : 0;

  if (argv.length === 0) {
    process.stdout.write(`locked ${mutex.key} ${mutex.revision}\n`);
    const outcome = await Promise.race([signals.next(), lost]);
    if (outcome instanceof Error) throw new CommandFailure(`${outcome.message}`, EXIT_LOCK_LOST);
    return 0;
  }

  const child = startCommand(argv, { ETCD_LOCK_KEY: mutex.key!, ETCD_LOCK_REV: mutex.revision! }, log, { lease: mutex.currentSession });
  signals.forwardTo(child);
  const outcome = await Promise.race([child.exited, lost]);
  if (typeof outcome === 'number') return outcome;
  log.error({ event: 'lock.lost_while_running', err: outcome.message, pid: child.pid }, 'lock lost while CMD runs: stopping CMD');
  const childCode = await child.stop(STOP_GRACE_MS);
  throw new CommandFailure(`${outcome.message}; CMD was stopped (its exit code ${childCode})`, EXIT_LOCK_LOST);
}

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

/**
 * SIGINT/SIGTERM handling for commands that wait, then run CMD: before CMD
 * runs, a signal aborts the wait (abortSignal); while CMD runs it is
 * forwarded to CMD (a second one is sent as SIGKILL), and the command ends
 * when CMD does, so the lock or leadership is released after CMD stopped.
 */
export class SignalRelay {
  received: NodeJS.Signals | undefined;
  private readonly ac = new AbortController();
  private child: RunningCommand | undefined;
  private forwarded = 0;
  private waiters: ((sig: NodeJS.Signals) => void)[] = [];
  private readonly handler = (sig: NodeJS.Signals) => this.onSignal(sig);

  constructor(private readonly log: Logger) {
    process.on('SIGINT', this.handler);
    process.on('SIGTERM', this.handler);
  }

  get abortSignal(): AbortSignal {
    return this.ac.signal;
  }

  forwardTo(child: RunningCommand | undefined): void {
    this.child = child;
    this.forwarded = 0;
  }

  /** Resolves at the next signal (or at once if one already came and nobody consumed it). */
  next(): Promise<NodeJS.Signals> {
    if (this.received && !this.child) return Promise.resolve(this.received);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  dispose(): void {
    process.off('SIGINT', this.handler);
    process.off('SIGTERM', this.handler);
  }

  private onSignal(sig: NodeJS.Signals): void {
    this.received = sig;
    const child = this.child;
    if (child && !child.done) {
      const send = this.forwarded++ === 0 ? sig : 'SIGKILL';
      this.log.info({ event: 'cli.signal_forwarded', signal: sig, sent: send, pid: child.pid }, `forwarding ${send} to CMD`);
      child.signal(send);
    } else {
      this.log.info({ event: 'cli.signal', signal: sig }, `received ${sig}`);
      this.ac.abort(new Error(`received ${sig}`));
    }
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w(sig);
  }
}
