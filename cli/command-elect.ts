import { Command, InvalidArgumentError, Option } from 'commander';
import type { Etcd3 } from 'etcd3';
import { addEtcdOptions, connectEtcd, errorText, type EtcdFlags } from './common';
import { parseCoordinationName, parseTtl } from './parse';
import { signalExitCode, startCommand, STOP_GRACE_MS } from './command-runner';
import { SignalRelay } from './signal-relay';
import { componentLogger, type Logger } from '../core/logger';
import { Backoff } from '../core/backoff';
import { Election } from '../coordination/election';
import { ElectionObserver } from '../coordination/election-observer';

interface ElectFlags extends EtcdFlags {
  id?: string;
  observe?: boolean;
  ttl: number;
}

function parseProposal(value: string): string {
  // Output is one line per leader: a value with a line break would break it.
  if (value === '' || /[\r\n]/.test(value)) {
    throw new InvalidArgumentError(value === '' ? 'must not be empty' : `${JSON.stringify(value)} must not contain line breaks`);
  }
  return value;
}

export function electCommand(): Command {
  const cmd = new Command('elect')
    .summary('leader election (interoperates with etcdctl elect); --observe to follow the leader')
    .description(
      'campaign for leadership of NAME (Go concurrency.Election layout, interoperates with `etcdctl elect`); print `elected ID` when leading, ' +
        'run CMD as leader and resign when it ends (exit with its code); without CMD lead until SIGINT/SIGTERM. ' +
        'If the lease is lost, leadership is dropped at once (CMD stopped) and the campaign starts again. ' +
        '--observe: print the leader value and every change.',
    )
    .argument('<name>', 'election name (keys NAME/<lease hex>)', parseCoordinationName)
    .argument('[cmd...]', 'command and arguments to run as leader, after --')
    .addOption(new Option('--id <value>', 'our proposal: the value observers see while we lead').argParser(parseProposal).conflicts('observe'))
    .addOption(new Option('--observe', 'do not campaign: print the current leader value and every change, one per line'))
    .addOption(new Option('--ttl <seconds>', 'lease TTL: how long a dead leader keeps leadership').default(10).argParser(parseTtl))
    .addHelpText('after', '\nExamples:\n  mesh elect scheduler --id "$(hostname)" -- ./run-scheduler\n  mesh elect scheduler --observe');
  addEtcdOptions(cmd);
  return cmd.action(async (name: string, argv: string[], flags: ElectFlags) => {
    if (!flags.observe && flags.id === undefined) cmd.error('mesh: elect needs --id <value> (to campaign) or --observe', { exitCode: 2, code: 'mesh.usage' });
    if (flags.observe && argv.length > 0) cmd.error('mesh: --observe takes no command', { exitCode: 2, code: 'mesh.usage' });
    const log = componentLogger('cli', { command: 'elect', election: name });
    const etcd = await connectEtcd(flags);
    const signals = new SignalRelay(log);
    let code: number;
    try {
      code = flags.observe ? await observe(etcd, name, signals, log) : await campaignLoop(etcd, name, flags.id!, flags.ttl, argv, signals, log);
    } finally {
      signals.dispose();
      etcd.close();
    }
    process.exit(code);
  });
}

async function observe(etcd: Etcd3, name: string, signals: SignalRelay, log: Logger): Promise<number> {
  const observer = new ElectionObserver(etcd, name, componentLogger('election', { election: name }));
  observer.on('leader', (leader) => {
    if (leader) process.stdout.write(`${leader.value}\n`);
  });
  await observer.start();
  log.info({ event: 'election.observing', leader: observer.current?.key }, 'observing');
  await signals.next();
  await observer.close();
  return 0;
}

/**
 * Campaign, lead, and on loss campaign again with a new lease until CMD ends
 * by itself (exit with its code) or a signal comes (resign; exit 0 without
 * CMD, CMD's code with one).
 */
async function campaignLoop(etcd: Etcd3, name: string, id: string, ttl: number, argv: string[], signals: SignalRelay, log: Logger): Promise<number> {
  const election = new Election(etcd, { name, ttlSeconds: ttl, log: componentLogger('election', { election: name, id }) });
  const backoff = new Backoff(200, 2_000);
  try {
    for (;;) {
      try {
        await election.campaign(id, { signal: signals.abortSignal });
      } catch (err) {
        if (signals.received) return argv.length > 0 ? signalExitCode(signals.received) : 0;
        const delay = backoff.next();
        log.warn({ event: 'election.campaign_failed', err: errorText(err), retryInMs: delay }, `campaign failed: ${errorText(err)}; campaigning again`);
        await new Promise((r) => setTimeout(r, delay));
        continue;
      }
      backoff.reset();
      const lost = new Promise<Error>((resolve) => election.once('lost', resolve));
      process.stdout.write(`elected ${id}\n`);
      log.info({ event: 'election.elected', key: election.key, revision: election.revision }, `elected ${id}`);
      if (signals.received) return argv.length > 0 ? signalExitCode(signals.received) : 0;

      if (argv.length === 0) {
        const outcome = await Promise.race([signals.next(), lost]);
        if (!(outcome instanceof Error)) return 0;
        log.warn({ event: 'election.lost', err: outcome.message }, 'leadership lost; campaigning again with a new lease');
        continue;
      }

      const child = startCommand(argv, { MESH_ELECTION_KEY: election.key!, MESH_ELECTION_REV: election.revision! }, log, { lease: election.currentSession });
      signals.forwardTo(child);
      const outcome = await Promise.race([child.exited, lost]);
      signals.forwardTo(undefined);
      if (typeof outcome === 'number') return outcome;
      log.error({ event: 'election.lost', err: outcome.message, pid: child.pid }, 'leadership lost while CMD runs: stopping CMD, then campaigning again');
      await child.stop(STOP_GRACE_MS);
      if (signals.received) return signalExitCode(signals.received);
    }
  } finally {
    // Resigning deletes our key at once: the next candidate leads without waiting for a TTL.
    await election.resign();
  }
}

