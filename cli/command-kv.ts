import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import type { Etcd3 } from 'etcd3';
import { addEtcdOptions, CommandFailure, connectEtcd, type EtcdFlags } from './common';
import { intIn } from './parse';
import { formatDel, formatGet, formatPut } from './kv-format';
import { prefixRange } from '../core/resumable-watch';
import { argBytes } from './argv-bytes';

/**
 * `mesh kv get|put|del`: etcdctl v3's commands with its flags and its
 * default ("simple") stdout, byte for byte, so scripts can swap one for the
 * other. Differences, on purpose: usage errors exit 2 (etcdctl: 128) with one
 * `mesh: ...` line; an empty KEY without --prefix/--from-key is a usage
 * error (etcdctl sends it and fails with "key is not provided", exit 1).
 * etcd errors (e.g. an unknown lease) exit 1 with nothing on stdout, as etcdctl.
 * KEY, END and VALUE are the raw argv bytes (argBytes), and output is the
 * stored bytes, so keys and values that are not UTF-8 pass through as with
 * etcdctl, in both directions.
 */

/** etcdctl's lease flag: the ID in hex (`etcdctl lease grant` prints it so); 0 = no lease. */
export function parseLeaseId(value: string): string {
  const v = value.trim();
  if (!/^[0-9a-fA-F]{1,16}$/.test(v) || BigInt(`0x${v}`) > 0x7fffffffffffffffn) {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a lease ID (hex, as etcdctl prints it)`);
  }
  return BigInt(`0x${v}`).toString();
}

/** A key range request as etcdctl builds it from KEY [END] --prefix --from-key. */
interface RangeSpec {
  key: Buffer;
  rangeEnd?: Buffer;
}

/**
 * etcdctl's getGetOp/getDelOp: END → [KEY, END); --prefix → every key
 * starting with KEY (KEY "" = everything); --from-key → every key >= KEY
 * (KEY "" = everything). END with either flag, or both flags, is a usage error.
 */
export function rangeSpec(key: Buffer, end: Buffer | undefined, flags: { prefix?: boolean; fromKey?: boolean }): RangeSpec {
  if (flags.prefix && flags.fromKey) throw new CommandFailure('`--prefix` and `--from-key` cannot be set at the same time, choose one', 2);
  if (end !== undefined && (flags.prefix || flags.fromKey)) throw new CommandFailure('too many arguments: END is not accepted with `--prefix` or `--from-key`', 2);
  if (key.length === 0 && !flags.prefix && !flags.fromKey) throw new CommandFailure('KEY must not be empty (use --prefix "" or --from-key "" for every key)', 2);
  const all = { key: Buffer.from([0]), rangeEnd: Buffer.from([0]) };
  if (flags.prefix) {
    if (key.length === 0) return all;
    const r = prefixRange(key);
    return { key: r.start, rangeEnd: r.end };
  }
  if (flags.fromKey) return key.length === 0 ? all : { key, rangeEnd: Buffer.from([0]) };
  // END "" means no range (etcdctl sends nothing). Never send an empty
  // range_end: protobufjs puts it on the wire, and etcd reads a present but
  // empty range_end as "every key >= KEY", not as "just KEY".
  return { key, rangeEnd: end && end.length > 0 ? end : undefined };
}

function nonEmpty(what: string) {
  return (value: string) => {
    if (value === '') throw new InvalidArgumentError(`${what} must not be empty`);
    return value;
  };
}

async function withEtcd<T>(flags: EtcdFlags, fn: (etcd: Etcd3) => Promise<T>): Promise<T> {
  const etcd = await connectEtcd(flags);
  try {
    return await fn(etcd);
  } finally {
    etcd.close();
  }
}

interface GetFlags extends EtcdFlags {
  prefix?: boolean;
  fromKey?: boolean;
  printValueOnly?: boolean;
  keysOnly?: boolean;
  limit: number;
  rev: number;
}

/** A command over KEY or [KEY, END), with etcdctl's --prefix and --from-key (get and del). */
function rangeCommand(name: string, verb: string, description: string): Command {
  return new Command(name)
    .description(description)
    .addArgument(new Argument('<key>', 'the key (or the range start)'))
    .addArgument(new Argument('[end]', 'range end, exclusive'))
    .option('--prefix', `${verb} every key with prefix KEY`)
    .option('--from-key', `${verb} every key >= KEY (byte order)`);
}

function getCommand(): Command {
  const cmd = rangeCommand('get', 'get', 'get KEY, or the keys in [KEY, END) (etcdctl get; same output)')
    .option('--print-value-only', 'print only values')
    .option('--keys-only', 'get only keys (empty value lines, as etcdctl)')
    .addOption(new Option('--limit <n>', 'at most n keys (0: no limit)').default(0).argParser(intIn(0, Number.MAX_SAFE_INTEGER)))
    .addOption(new Option('--rev <revision>', 'read at this revision (0: latest)').default(0).argParser(intIn(0, Number.MAX_SAFE_INTEGER)));
  addEtcdOptions(cmd);
  return cmd.action(async (key: string, end: string | undefined, flags: GetFlags) => {
    const spec = rangeSpec(argBytes(key), end === undefined ? undefined : argBytes(end), flags);
    const res = await withEtcd(flags, (etcd) =>
      etcd.kv.range({ key: spec.key, range_end: spec.rangeEnd, limit: flags.limit, revision: flags.rev, keys_only: Boolean(flags.keysOnly) }),
    );
    process.stdout.write(formatGet(res.kvs, { valueOnly: flags.printValueOnly }));
  });
}

interface PutFlags extends EtcdFlags {
  lease: string;
  prevKv?: boolean;
}

function putCommand(): Command {
  const cmd = new Command('put')
    .description('put VALUE at KEY; prints OK (etcdctl put; same output)')
    .addArgument(new Argument('<key>', 'the key').argParser(nonEmpty('KEY')))
    .addArgument(new Argument('<value>', 'the value (may be empty; use -- before a value starting with -)'))
    .addOption(new Option('--lease <id>', 'attach the key to this lease (ID in hex)').default('0').argParser(parseLeaseId))
    .option('--prev-kv', 'also print the previous key-value pair');
  addEtcdOptions(cmd);
  return cmd.action(async (key: string, value: string, flags: PutFlags) => {
    const res = await withEtcd(flags, (etcd) =>
      etcd.kv.put({ key: argBytes(key), value: argBytes(value), lease: flags.lease, prev_kv: Boolean(flags.prevKv) }),
    );
    process.stdout.write(formatPut(flags.prevKv ? res.prev_kv : undefined));
  });
}

interface DelFlags extends EtcdFlags {
  prefix?: boolean;
  fromKey?: boolean;
  prevKv?: boolean;
}

function delCommand(): Command {
  const cmd = rangeCommand('del', 'delete', 'delete KEY, or the keys in [KEY, END); prints the number deleted (etcdctl del; same output)')
    .option('--prev-kv', 'also print the deleted key-value pairs');
  addEtcdOptions(cmd);
  return cmd.action(async (key: string, end: string | undefined, flags: DelFlags) => {
    const spec = rangeSpec(argBytes(key), end === undefined ? undefined : argBytes(end), flags);
    const res = await withEtcd(flags, (etcd) => etcd.kv.deleteRange({ key: spec.key, range_end: spec.rangeEnd, prev_kv: Boolean(flags.prevKv) }));
    process.stdout.write(formatDel(res.deleted, res.prev_kvs ?? []));
  });
}

export function kvCommand(): Command {
  return new Command('kv').description('etcdctl-compatible key commands: get, put, del (same flags, same output)').addCommand(getCommand()).addCommand(putCommand()).addCommand(delCommand());
}
