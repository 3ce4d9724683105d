import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import { addEtcdOptions, CommandFailure, connectEtcd, type EtcdFlags } from './common';
import { intIn, parseTtl } from './parse';
import { finish, stopSignal } from './observe-lifecycle';
import { CompactedError, publish, Subscription, type Message } from '../coordination/pubsub';
import { componentLogger } from '../core/logger';
import { argBytes } from './argv-bytes';

/**
 * `mesh pub TOPIC MESSAGE [--ttl S]` prints the message's revision (one
 * line), which `mesh sub TOPIC --from-rev REV` replays from.
 * `mesh sub TOPIC [--from-rev N] [--count N] [--json]` prints each message
 * on its own line in publish (revision) order.
 * TOPIC and MESSAGE are the raw argv bytes (as etcdctl takes them), and sub
 * prints each payload's bytes unchanged (--json: key and value decoded as
 * UTF-8, so bytes that are not UTF-8 show as U+FFFD there).
 */

/** A topic is a key prefix: non-empty, printable, no spaces; trailing `/` dropped. */
export function parseTopic(value: string): string {
  const v = value.replace(/\/+$/, '');
  if (v === '') throw new InvalidArgumentError('must not be empty (a topic is a key prefix such as news)');
  if (/[\s\x00-\x1f\x7f]/.test(v)) throw new InvalidArgumentError(`${JSON.stringify(value)} must not contain spaces or control characters`);
  return v;
}

/** A revision: a positive integer (etcd revisions start at 1). */
export function parseRevision(value: string): bigint {
  if (!/^\d{1,19}$/.test(value.trim()) || BigInt(value.trim()) < 1n) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a revision (a positive integer)`);
  return BigInt(value.trim());
}

interface PubFlags extends EtcdFlags {
  ttl?: number;
}

export function pubCommand(): Command {
  const cmd = new Command('pub')
    .description('publish MESSAGE on TOPIC (each message is its own key under TOPIC/); prints the message\'s revision')
    .addArgument(new Argument('<topic>', 'topic: a key prefix, e.g. news').argParser(parseTopic))
    .addArgument(new Argument('<message>', 'the payload (may be empty)'))
    .addOption(new Option('--ttl <seconds>', 'the message expires after this many seconds (a lease)').argParser(parseTtl));
  addEtcdOptions(cmd);
  return cmd.action(async (topic: string, message: string, flags: PubFlags) => {
    const etcd = await connectEtcd(flags);
    try {
      const p = await publish(etcd, argBytes(topic), argBytes(message), { ttlSeconds: flags.ttl });
      process.stdout.write(`${p.revision}\n`);
    } finally {
      etcd.close();
    }
  });
}

interface SubFlags extends EtcdFlags {
  fromRev?: bigint;
  count?: number;
  json: boolean;
}

export function subCommand(): Command {
  const cmd = new Command('sub')
    .description('print every message published on TOPIC, one per line, in publish order; resumes without gaps or duplicates after a dropped stream')
    .addArgument(new Argument('<topic>', 'topic: a key prefix, e.g. news').argParser(parseTopic))
    .addOption(new Option('--from-rev <revision>', 'replay from this revision (see `mesh pub` output) instead of only new messages').argParser(parseRevision))
    .addOption(new Option('--count <n>', 'exit 0 after n messages').argParser(intIn(1, 1_000_000_000)))
    .addOption(new Option('--json', 'one JSON object per message: {"key","value","revision"} (value as UTF-8)').default(false));
  addEtcdOptions(cmd);
  return cmd.action(async (topic: string, flags: SubFlags) => {
    const log = componentLogger('cli.sub', { topic });
    const etcd = await connectEtcd(flags);
    const signal = stopSignal();
    let sub: Subscription | undefined;
    try {
      sub = await Subscription.open(etcd, argBytes(topic), { fromRevision: flags.fromRev, log });
      const s = sub;
      let seen = 0;
      const outcome = await new Promise<'count' | 'signal' | CompactedError>((resolve) => {
        s.on('message', (m: Message) => {
          if (flags.count !== undefined && seen >= flags.count) return;
          seen++;
          process.stdout.write(flags.json ? `${JSON.stringify({ key: m.key, value: m.value.toString('utf8'), revision: m.revision })}\n` : Buffer.concat([m.value, Buffer.from('\n')]));
          if (flags.count !== undefined && seen >= flags.count) resolve('count');
        });
        s.on('error', (err: CompactedError) => resolve(err));
        // Drops and resumes are logged by the watch itself (watch.disconnected, watch.state).
        void signal.stopped.then(() => resolve('signal'));
      });
      if (outcome instanceof CompactedError) {
        throw new CommandFailure(`topic ${topic}: ${outcome.message}; messages may have been lost, so stopping (rerun with --from-rev at a later revision or without it)`);
      }
      finish(0);
    } finally {
      signal.dispose();
      sub?.close();
      etcd.close();
    }
  });
}
