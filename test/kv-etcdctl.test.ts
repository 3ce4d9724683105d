import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster } from './harness/etcd-cluster';
import { MESH_MAIN } from './harness/mesh-process';
import { createEtcdClient } from '../balancer/etcd-client';

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

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env: { ...process.env, ...env }, encoding: 'buffer', timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
    // `etcdctl put KEY` without VALUE reads the value from stdin: give it EOF.
    child.stdin?.end();
  });
}

const etcdctl = (args: string[]) => run('etcdctl', [`--endpoints=${etcd.endpoints}`, ...args], { ETCDCTL_API: '3' });
// Endpoints through the environment, so the argument list is exactly etcdctl's (`--` included).
const mesh = (args: string[]) => run(process.execPath, [MESH_MAIN, 'kv', ...args], { MESH_LOG_LEVEL: 'warn', ETCD_ENDPOINTS: etcd.endpoints });

/** Run the same arguments through both tools; stdout and exit code must be identical. */
async function same(args: string[]): Promise<{ ours: Run; theirs: Run }> {
  const [theirs, ours] = [await etcdctl(args), await mesh(args)];
  expect({ args, stdout: ours.stdout.toString('hex'), code: ours.code }).toEqual({ args, stdout: theirs.stdout.toString('hex'), code: theirs.code });
  return { ours, theirs };
}

/** A mutating command, once per tool on a fresh fixture: stdout, exit code and the resulting keyspace must match. */
async function sameEffect(args: string[]): Promise<{ ours: Run; theirs: Run }> {
  await loadFixture();
  const theirs = await etcdctl(args);
  const after = await dump();
  await loadFixture();
  const ours = await mesh(args);
  expect({ args, stdout: ours.stdout.toString('hex'), code: ours.code, keyspace: await dump() }).toEqual({ args, stdout: theirs.stdout.toString('hex'), code: theirs.code, keyspace: after });
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
