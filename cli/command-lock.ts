import { Command, Option } from 'commander';
import { addEtcdOptions, connectEtcd, CommandFailure, type EtcdFlags } from './common';
import { parseCoordinationName, parseTtl } from './parse';
import { signalExitCode, startCommand, STOP_GRACE_MS } from './command-runner';
import { SignalRelay } from './signal-relay';
import { componentLogger, type Logger } from '../core/logger';
import { EtcdMutex, LockHeldError, LockLostError } from '../coordination/lock';

interface LockFlags extends EtcdFlags {
  ttl: number;
  try?: boolean;
}

/** Exit codes of `mesh lock` besides CMD's own. */
export const EXIT_LOCK_HELD = 3;
export const EXIT_LOCK_LOST = 4;

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
