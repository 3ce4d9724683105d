import { Command, Option } from 'commander';
import { addEtcdOptions, connectEtcd, CommandFailure, type EtcdFlags } from './common';
import { intIn, parsePositiveDuration, parseTtl } from './parse';
import { parseCoordinationName, SignalRelay } from './command-lock';
import { componentLogger } from '../balancer/logger';
import { EtcdQueue, type Delivery } from '../coordination/queue';
import { Session } from '../coordination/lock-session';

interface PopFlags extends EtcdFlags {
  wait?: boolean;
  timeout?: number;
  ttl: number;
  count: number;
}

export function queueCommand(): Command {
  const queue = new Command('queue').summary('FIFO work queue: push, pop (each item to exactly one consumer)').description('a FIFO work queue in etcd: each item goes to exactly one consumer; items of a consumer that dies go back to the queue');
  queue.addCommand(pushCommand());
  queue.addCommand(popCommand());
  // `mesh queue` alone is a usage error like any other: one line, exit 2.
  queue.action(() => queue.error('mesh: queue needs a subcommand: push or pop', { exitCode: 2, code: 'mesh.usage' }));
  return queue;
}

function pushCommand(): Command {
  const cmd = new Command('push')
    .description('append VALUE to queue NAME (FIFO by etcd create revision)')
    .argument('<name>', 'queue name (keys NAME/items/..., NAME/claims/...)', parseCoordinationName)
    .argument('<value>', 'the item')
    .addHelpText('after', '\nExample:\n  mesh queue push jobs \'{"video": 42}\'');
  addEtcdOptions(cmd);
  return cmd.action(async (name: string, value: string, flags: EtcdFlags) => {
    const etcd = await connectEtcd(flags);
    try {
      const item = await new EtcdQueue(etcd, { name, log: componentLogger('queue', { queue: name }) }).push(value);
      componentLogger('cli', { command: 'queue push' }).info({ event: 'queue.pushed', key: item.key, revision: item.createRevision }, 'pushed');
    } finally {
      etcd.close();
    }
  });
}

function popCommand(): Command {
  const cmd = new Command('pop')
    .description(
      'take the oldest item of queue NAME and print it; acknowledged (deleted) only after it was written to stdout. ' +
        'Exit 1 if the queue is empty (without --wait) or stays empty for --timeout.',
    )
    .argument('<name>', 'queue name', parseCoordinationName)
    .option('--wait', 'wait for an item if the queue is empty')
    .addOption(new Option('--timeout <duration>', 'with --wait (implied): give up after this long, exit 1').argParser(parsePositiveDuration))
    .addOption(new Option('--count <n>', 'pop up to n items, one per line (0: no limit, until empty/timeout/signal)').default(1).argParser(intIn(0, 1_000_000_000)))
    .addOption(new Option('--ttl <seconds>', 'lease TTL: how soon items taken by a consumer that died go back to the queue').default(10).argParser(parseTtl))
    .addHelpText('after', '\nExamples:\n  mesh queue pop jobs\n  mesh queue pop jobs --wait --timeout 30s\n  mesh queue pop jobs --wait --count 0 | while read -r job; do ...; done');
  addEtcdOptions(cmd);
  return cmd.action(async (name: string, flags: PopFlags) => {
    const log = componentLogger('cli', { command: 'queue pop', queue: name });
    const etcd = await connectEtcd(flags);
    const signals = new SignalRelay(log);
    const session = await Session.open(etcd, flags.ttl, componentLogger('queue', { queue: name })).catch((err) => {
      etcd.close();
      throw err;
    });
    const consumer = new EtcdQueue(etcd, { name, log: componentLogger('queue', { queue: name }) }).consumer(session);
    const wait = Boolean(flags.wait) || flags.timeout !== undefined;
    let popped = 0;
    let stoppedBy: NodeJS.Signals | undefined;
    try {
      while (flags.count === 0 || popped < flags.count) {
        let d: Delivery | undefined;
        try {
          d = wait ? await consumer.pop({ timeoutMs: flags.timeout, signal: signals.abortSignal }) : await consumer.tryPop();
        } catch (err) {
          if (signals.received) {
            stoppedBy = signals.received;
            break;
          }
          throw err;
        }
        if (!d) break;
        // Print, make sure it left the process, then acknowledge: a consumer
        // dying in between is the only way an item is delivered twice.
        await new Promise<void>((resolve, reject) => process.stdout.write(`${d.value}\n`, (err) => (err ? reject(err) : resolve())));
        await d.ack();
        popped++;
        log.debug({ event: 'queue.popped', key: d.key }, 'popped and acknowledged');
        if (signals.received) {
          stoppedBy = signals.received;
          break;
        }
      }
    } finally {
      signals.dispose();
      // Revoking our lease drops any claim we still hold: the item is back at once.
      await session.close();
      etcd.close();
    }
    if (popped === 0 && !stoppedBy) {
      throw new CommandFailure(wait ? `queue ${name} stayed empty for ${flags.timeout} ms` : `queue ${name} is empty`, 1);
    }
    process.exit(popped === 0 && stoppedBy ? 1 : 0);
  });
}
