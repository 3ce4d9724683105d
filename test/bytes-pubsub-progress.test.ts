import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { EtcdCluster } from './harness/etcd-cluster';
import { MESH_MAIN } from './harness/mesh-process';
import { waitFor } from './harness/ports';

/**
 * `mesh pub`/`sub` and `mesh progress` with arguments that are not UTF-8,
 * against etcdctl on the same keyspace: what mesh stores is exactly the argv
 * bytes, and what it prints is exactly the stored bytes. The raw arguments
 * go through bash ($'\xNN' quoting), since Node's spawn only takes strings.
 * Topics and jobs are chosen in pairs that Node would decode alike
 * (`t\xff`, `t\xfe` → "t\uFFFD"), so a lossy decoding shows up as a mix-up.
 */

let etcd: EtcdCluster;

beforeAll(async () => {
  etcd = await EtcdCluster.start(1);
});

afterAll(async () => {
  await etcd?.stop();
});

type Arg = string | Buffer;
const X = (hex: string) => Buffer.from(hex.replace(/ /g, ''), 'hex');
const raw = (prefix: string, hex: string, suffix = '') => Buffer.concat([Buffer.from(prefix), X(hex), Buffer.from(suffix)]);
const NL = Buffer.from('\n');
const lines = (...values: Buffer[]) => Buffer.concat(values.flatMap((v) => [v, NL]));

function bashQuote(arg: Arg): string {
  const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(arg);
  return `$'${[...bytes].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('')}'`;
}

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs through bash so every argument reaches argv byte for byte; bounded by a timeout. */
function run(cmd: string, args: Arg[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    const line = `exec ${[cmd, ...args].map(bashQuote).join(' ')}`;
    const child = execFile('bash', ['-c', line], { env: { ...process.env, ...env }, encoding: 'buffer', timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
    child.stdin?.end();
  });
}

const etcdctl = (args: Arg[]) => run('etcdctl', [`--endpoints=${etcd.endpoints}`, ...args], { ETCDCTL_API: '3' });
const mesh = (args: Arg[]) => run(process.execPath, [MESH_MAIN, ...args], { MESH_LOG_LEVEL: 'warn', ETCD_ENDPOINTS: etcd.endpoints });

/** A command that must succeed; its stdout. */
async function ok(r: Promise<Run>): Promise<Buffer> {
  const res = await r;
  expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 0, stderr: '' });
  return res.stdout;
}

describe('raw bytes through pub/sub and progress', () => {
  it('pub stores topic and message as the argv bytes; sub prints every payload raw, also ones etcdctl wrote', async () => {
    const topic = raw('t', 'ff');
    const other = raw('t', 'fe'); // Node decodes both to "t\uFFFD": must stay another topic
    const m1 = raw('a', 'fe 80', 'b');
    const m2 = X('ff fe'); // written by etcdctl under the topic
    const m3 = X('c3 28');
    const rev = (await ok(mesh(['pub', topic, m1]))).toString().trim();
    expect(rev).toMatch(/^\d+$/);
    await ok(mesh(['pub', other, 'not mine']));
    await ok(etcdctl(['put', raw('t', 'ff', '/~by-etcdctl'), m2]));
    await ok(mesh(['pub', topic, m3]));
    // Replay from the first message: no waiting for a live watch, and --count ends it.
    const sub = await mesh(['sub', topic, '--from-rev', rev, '--count', '3']);
    expect({ code: sub.code, stdout: sub.stdout.toString('hex') }).toEqual({ code: 0, stdout: lines(m1, m2, m3).toString('hex') });
    // etcdctl sees the same bytes under the raw topic prefix (key order: mesh's time-ordered ids, then `~...`), and the other topic apart.
    const stored = await ok(etcdctl(['get', '--prefix', '--print-value-only', raw('t', 'ff', '/')]));
    expect(stored.toString('hex')).toBe(lines(m1, m3, m2).toString('hex'));
    expect((await ok(etcdctl(['get', '--prefix', '--print-value-only', raw('t', 'fe', '/')]))).toString()).toBe('not mine\n');
  });

  it('progress set/watch use the job and --prefix bytes in the key, and watch prints the job raw', async () => {
    const job = raw('j', 'ff');
    await ok(mesh(['progress', 'set', job, '42']));
    expect((await ok(etcdctl(['get', raw('progress/j', 'ff')]))).toString('hex')).toBe(lines(raw('progress/j', 'ff'), Buffer.from('42')).toString('hex'));
    await ok(mesh(['progress', 'set', raw('--prefix=p', 'fe'), job, '7'])); // the --flag=value form carries raw bytes too
    expect((await ok(etcdctl(['get', '--print-value-only', Buffer.concat([raw('p', 'fe', '/j'), X('ff')])]))).toString()).toBe('7\n');
    // A job Node would decode alike is another key: at 100, it does not end the watch of j\xff.
    await ok(etcdctl(['put', raw('progress/j', 'fe'), '100']));
    const watch = spawn('bash', ['-c', `exec ${[process.execPath, MESH_MAIN, 'progress', 'watch', job].map(bashQuote).join(' ')}`], {
      env: { ...process.env, MESH_LOG_LEVEL: 'warn', ETCD_ENDPOINTS: etcd.endpoints },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const chunks: Buffer[] = [];
      watch.stdout.on('data', (c: Buffer) => chunks.push(c));
      const exited = new Promise<number | null>((resolve) => watch.on('exit', (code) => resolve(code)));
      const first = Buffer.concat([job, Buffer.from(' 42%\n')]);
      await waitFor('the watch prints the current value', () => Buffer.concat(chunks).equals(first), 20_000);
      await ok(etcdctl(['put', raw('progress/j', 'ff'), '100']));
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000))]);
      expect({ code, stdout: Buffer.concat(chunks).toString('hex') }).toEqual({ code: 0, stdout: Buffer.concat([first, job, Buffer.from(' 100%\n')]).toString('hex') });
    } finally {
      watch.kill('SIGKILL');
    }
  });
});
