import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster } from './harness/etcd-cluster';
import { MESH_MAIN } from './harness/mesh-process';
import { createEtcdClient } from '../core/etcd-client';

/**
 * `mesh kv` against the real etcdctl v3 on the same keyspace: stdout byte for
 * byte and the exit code, for every flag combination of the contract. Each
 * mutating case runs twice on a freshly loaded fixture (once per tool) and
 * the resulting keyspaces must match too.
 */

let etcd: EtcdCluster;
let client: Etcd3;
let lease: string;

/** The seed's keyspace (etcdctl section) plus awkward keys and values. */
const FIXTURE: [Buffer, Buffer][] = [
  ['avg_age', '25'],
  ['name1', 'james'],
  ['name11', 'alice'],
  ['name12', 'seli'],
  ['name2', 'jetty'],
  ['name3', 'tom'],
  ['name4', 'cris'],
  ['key with spaces', 'value with  spaces '],
  ['empty', ''],
  ['multi', 'line1\nline2\n'],
  ['utf', 'héllo ✓\ttab'],
].map(([k, v]) => [Buffer.from(k), Buffer.from(v)] as [Buffer, Buffer]);
FIXTURE.push([Buffer.from('bin'), Buffer.from([0x00, 0x01, 0xff, 0xfe, 0x0a, 0x0d, 0x09, 0x80])]);
FIXTURE.push([Buffer.from([0x62, 0x69, 0x6e, 0xff]), Buffer.from([0xc3, 0x28])]); // key "bin\xff", invalid UTF-8 value
// Keys that are not UTF-8 and that Node would decode alike ("raw/\uFFFD..."): only raw argv tells them apart.
const X = (hex: string) => Buffer.from(hex.replace(/ /g, ''), 'hex');
FIXTURE.push([Buffer.concat([Buffer.from('raw/'), X('fe')]), X('80 81')]);
FIXTURE.push([Buffer.concat([Buffer.from('raw/'), X('ff')]), X('ff 0a fe')]);
FIXTURE.push([Buffer.concat([Buffer.from('raw/'), X('ff ff')]), Buffer.from('valid value')]);
FIXTURE.push([Buffer.concat([Buffer.from('raw/'), X('c3 28'), Buffer.from('x')]), X('ed a0 80')]); // encoded surrogate: invalid too
FIXTURE.push([X('ff ff'), X('c0 af')]); // overlong "/"

beforeAll(async () => {
  etcd = await EtcdCluster.start(1);
  client = createEtcdClient({ endpoints: [etcd.endpoints] });
  lease = /lease ([0-9a-f]+) granted/.exec((await etcd.etcdctl(['lease', 'grant', '600'])).stdout)![1];
});

afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

async function loadFixture(): Promise<void> {
  await client.kv.txn({
    success: [{ request_delete_range: { key: Buffer.from([0]), range_end: Buffer.from([0]) } }, ...FIXTURE.map(([key, value]) => ({ request_put: { key, value } }))],
  });
}

/** Every key, value and lease, hex-encoded: what a command left behind. */
async function dump(): Promise<string[]> {
  const res = await client.kv.range({ key: Buffer.from([0]), range_end: Buffer.from([0]) });
  return res.kvs.map((kv) => `${kv.key.toString('hex')}=${kv.value.toString('hex')} lease=${kv.lease}`);
}

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** An argument: a string (UTF-8), or raw bytes that need not be UTF-8. */
type Arg = string | Buffer;

/** bash's $'...' quoting of every byte: argv carries them unchanged (NUL aside, which argv cannot hold). */
function bashQuote(arg: Arg): string {
  const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(arg);
  return `$'${[...bytes].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('')}'`;
}

/**
 * Node's spawn takes arguments only as strings (sent as UTF-8), so a command
 * line with raw bytes goes through bash, which puts them in argv as they are.
 */
function run(cmd: string, args: Arg[], env: NodeJS.ProcessEnv): Promise<Run> {
  const raw = args.some((a) => Buffer.isBuffer(a));
  const [file, argv] = raw ? ['bash', ['-c', `exec ${[cmd, ...args].map(bashQuote).join(' ')}`]] : [cmd, args as string[]];
  return new Promise((resolve) => {
    const child = execFile(file, argv, { env: { ...process.env, ...env }, encoding: 'buffer', timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
    // `etcdctl put KEY` without VALUE reads the value from stdin: give it EOF.
    child.stdin?.end();
  });
}

const etcdctl = (args: Arg[]) => run('etcdctl', [`--endpoints=${etcd.endpoints}`, ...args], { ETCDCTL_API: '3' });
// Endpoints through the environment, so the argument list is exactly etcdctl's (`--` included).
const mesh = (args: Arg[]) => run(process.execPath, [MESH_MAIN, 'kv', ...args], { MESH_LOG_LEVEL: 'warn', ETCD_ENDPOINTS: etcd.endpoints });

/** For failure messages: an argument list with raw bytes shown in hex. */
const show = (args: Arg[]) => args.map((a) => (Buffer.isBuffer(a) ? `hex:${a.toString('hex')}` : a));

/** Run the same arguments through both tools; stdout and exit code must be identical. */
async function same(args: Arg[]): Promise<{ ours: Run; theirs: Run }> {
  const [theirs, ours] = [await etcdctl(args), await mesh(args)];
  expect({ args: show(args), stdout: ours.stdout.toString('hex'), code: ours.code }).toEqual({ args: show(args), stdout: theirs.stdout.toString('hex'), code: theirs.code });
  return { ours, theirs };
}

/** A mutating command, once per tool on a fresh fixture: stdout, exit code and the resulting keyspace must match. */
async function sameEffect(args: Arg[]): Promise<{ ours: Run; theirs: Run }> {
  await loadFixture();
  const theirs = await etcdctl(args);
  const after = await dump();
  await loadFixture();
  const ours = await mesh(args);
  expect({ args: show(args), stdout: ours.stdout.toString('hex'), code: ours.code, keyspace: await dump() }).toEqual({ args: show(args), stdout: theirs.stdout.toString('hex'), code: theirs.code, keyspace: after });
  return { ours, theirs };
}

describe('mesh kv matches etcdctl byte for byte', () => {
  it('get: single keys, ranges, --prefix, --from-key, --keys-only, --print-value-only, --limit, odd values', async () => {
    await loadFixture();
    const cases: string[][] = [
      ['get', 'name1'],
      ['get', '--print-value-only', 'name1'],
      ['get', '--prefix', 'name'],
      ['get', '--from-key', 'name2'],
      ['get', 'name1', 'name3'],
      ['get', 'name3', 'name1'],
      ['get', 'name1', ''],
      ['get', '--from-key', ''],
      ['get', '--prefix', ''],
      ['get', '--keys-only', '--prefix', 'name'],
      ['get', '--keys-only', '--print-value-only', '--prefix', 'name'],
      ['get', '--prefix', '--print-value-only', 'name'],
      ['get', '--prefix', '--limit', '2', 'name'],
      ['get', '--from-key', '--limit=3', 'name11'],
      ['get', 'name1', 'name4', '--limit', '1', '--keys-only'],
      ['get', '--limit', '0', '--prefix', 'name1'],
      ['get', 'bin'],
      ['get', '--prefix', 'bin'],
      ['get', 'empty'],
      ['get', '--print-value-only', 'empty'],
      ['get', 'multi'],
      ['get', 'utf'],
      ['get', 'key with spaces'],
      ['get', '--prefix', 'key with'],
      ['get', 'no-such-key'],
      ['get', '--prefix', 'no-such-prefix'],
      ['get', '--from-key', 'zzz'],
    ];
    // Reads do not change the keyspace: run them a few at a time.
    for (let i = 0; i < cases.length; i += 4) await Promise.all(cases.slice(i, i + 4).map(same));
  });

  it('put: OK, overwrite, --prev-kv, empty and odd values, keys with spaces, --lease (hex)', async () => {
    for (const args of [
      ['put', 'fresh', 'v1'],
      ['put', 'name1', 'overwritten'],
      ['put', '--prev-kv', 'name1', 'x'],
      ['put', '--prev-kv', 'bin', 'x'],
      ['put', '--prev-kv', 'brand-new', 'x'],
      ['put', 'empty2', ''],
      ['put', 'key with spaces 2', ' v a l '],
      ['put', 'utf2', 'héllo ✓\ttab\x01'],
      ['put', 'multi2', 'a\nb'],
      ['put', 'neg', '--', '-5'],
      ['put', `--lease=${lease}`, 'leased', 'v'],
      ['put', '--lease', lease, 'name2', 'leased too'],
      ['put', '--lease', '0', 'unleased', 'v'],
    ]) {
      const { ours } = await sameEffect(args);
      expect(ours.code).toBe(0);
    }
  });

  it('put with an unknown lease: nothing on stdout, exit 1, keyspace unchanged, like etcdctl', async () => {
    const { ours } = await sameEffect(['put', '--lease', '1234abcd', 'k', 'v']);
    expect(ours.code).toBe(1);
    expect(ours.stderr).toMatch(/lease not found/);
  });

  it('del: count, --prev-kv, --prefix, --from-key, ranges, everything, no match', async () => {
    for (const args of [
      ['del', 'name11'],
      ['del', '--prev-kv', 'name12'],
      ['del', '--prev-kv', '--from-key', 'name3'],
      ['del', '--prev-kv', '--prefix', 'name'],
      ['del', '--prefix', 'name'],
      ['del', 'name1', 'name3'],
      ['del', '--prev-kv', 'name1', 'name3'],
      ['del', '--prev-kv', 'bin'],
      ['del', '--prev-kv', '--prefix', 'bin'],
      ['del', '--prev-kv', 'key with spaces'],
      ['del', '--prev-kv', 'empty'],
      ['del', '--prefix', ''],
      ['del', '--prev-kv', '--from-key', ''],
      ['del', 'no-such-key'],
      ['del', '--prev-kv', '--prefix', 'no-such-prefix'],
    ]) {
      const { ours } = await sameEffect(args);
      expect(ours.code).toBe(0);
    }
  });

  // Keys and values that are not UTF-8, as argv bytes (through bash), against etcdctl.
  const raw = (prefix: string, hex: string, suffix = '') => Buffer.concat([Buffer.from(prefix), X(hex), Buffer.from(suffix)]);

  it('get: keys and values that are not UTF-8, named by raw argv bytes (single, ranges, --prefix, --from-key, --keys-only, --print-value-only)', async () => {
    await loadFixture();
    const cases: Arg[][] = [
      [raw('bin', 'ff')],
      ['--print-value-only', raw('bin', 'ff')],
      // Two arguments Node decodes to the same string "raw/\uFFFD": END must be its own bytes.
      [raw('raw/', 'fe'), raw('raw/', 'ff')],
      [raw('raw/', 'c3 28'), raw('raw/', 'ff ff')],
      ['--from-key', raw('raw/', 'fe')],
      ['--prefix', raw('raw/', 'ff')],
      ['--prefix', X('ff')],
    ];
    await Promise.all(cases.map((c) => same(['get', ...c])));
  });

  it('put and del: keys and values that are not UTF-8 stored and removed exactly as etcdctl does (--prev-kv included)', async () => {
    for (const args of [
      ['put', raw('p', 'ff'), raw('', 'fe 80 c3 28', ' and text')],
      ['put', '--prev-kv', raw('bin', 'ff'), X('80')],
      ['del', '--prev-kv', raw('raw/', 'fe'), raw('raw/', 'ff')],
      ['del', '--prev-kv', '--from-key', raw('raw/', 'fe')],
      ['del', '--prev-kv', '--prefix', X('ff')],
    ] as Arg[][]) {
      const { ours } = await sameEffect(args);
      expect(ours.code).toBe(0);
    }
  });

  it('round trip across tools: written by mesh, read by etcdctl; written by etcdctl, read and deleted by mesh', async () => {
    await loadFixture();
    const key = raw('cross/', 'ff 80');
    const value = X('fe 0a c3');
    expect((await mesh(['put', key, value])).code).toBe(0);
    expect((await etcdctl(['get', key])).stdout).toEqual(Buffer.concat([key, Buffer.from('\n'), value, Buffer.from('\n')]));
    const key2 = raw('cross/', 'fe');
    expect((await etcdctl(['put', key2, X('ff')])).code).toBe(0);
    expect((await mesh(['get', '--print-value-only', key2])).stdout).toEqual(Buffer.concat([X('ff'), Buffer.from('\n')]));
    expect((await mesh(['del', key2])).stdout.toString()).toBe('1\n');
    expect((await mesh(['del', key])).stdout.toString()).toBe('1\n');
    expect((await etcdctl(['get', '--prefix', 'cross/'])).stdout).toHaveLength(0);
  });

  it('usage errors: mesh exits 2 with one stderr line and empty stdout where etcdctl refuses too (etcdctl: 128 or 1)', async () => {
    await loadFixture();
    for (const args of [
      ['get', '--prefix', '--from-key', 'name'],
      ['get', '--prefix', 'name1', 'name3'],
      ['del', '--from-key', 'name1', 'name3'],
      ['put', 'k', 'v', '--lease', 'zz'],
      ['put', 'k', 'v', '--lease', '-1'],
      ['put', 'k'],
      ['get'],
      ['del'],
      ['get', '--limit', 'abc', 'k'],
    ]) {
      const [theirs, ours] = [await etcdctl(args), await mesh(args)];
      expect({ args, code: ours.code, stdout: ours.stdout.toString() }).toEqual({ args, code: 2, stdout: '' });
      expect(ours.stderr.trim().split('\n')).toHaveLength(1);
      // etcdctl prints its usage text on stdout for some of these; we print nothing there.
      expect(theirs.code).not.toBe(0);
    }
    // An empty KEY means "everything" only with --prefix/--from-key; alone it is refused (etcdctl asks etcd, which refuses).
    for (const args of [['get', ''], ['put', '', 'v'], ['del', '']]) {
      const [theirs, ours] = [await etcdctl(args), await mesh(args)];
      expect({ args, code: ours.code, stdout: ours.stdout.toString() }).toEqual({ args, code: 2, stdout: '' });
      expect(theirs.code).not.toBe(0);
    }
    for (const args of [['--help'], ['get', '--help'], ['put', '--help'], ['del', '--help']]) expect((await mesh(args)).code).toBe(0);
  });
});
