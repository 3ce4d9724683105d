import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster, startTestEtcd, stopTestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh, REPO } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { createEtcdClient } from '../core/etcd-client';
import { EtcdMutex, LockHeldError, LockLostError } from '../coordination/lock';

/**
 * The distributed lock against a real etcd: interoperation with the real
 * `etcdctl lock` both ways, mutual exclusion under contention (a counter),
 * fairness, fencing tokens, loss of the lease, signals. Critical sections
 * record `start X` / `end X` lines in a file (O_APPEND, so the file order is
 * the time order): exclusion holds iff every `start` is followed by the
 * `end` of the same holder.
 */

let etcd: EtcdCluster;
let client: Etcd3;
let dir: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  ({ etcd, client } = await startTestEtcd());
  dir = mkdtempSync(path.join(tmpdir(), 'mesh-lock-test-'));
});

afterAll(() =>
  stopTestEtcd({ etcd, client }, () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  }),
);

/** A tracked child (etcdctl, node workers), killed in afterAll if still running. */
function start(cmd: string, args: string[], env: Record<string, string> = {}): { proc: ChildProcess; exited: Promise<number | null>; out: () => string; err: () => string } {
  const proc = spawn(cmd, args, { env: { ...process.env, ETCDCTL_API: '3', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    proc.once('close', (code) => {
      children.delete(proc);
      resolve(code);
    }),
  );
  return { proc, exited, out: () => out, err: () => err };
}

function lines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** A shell critical section: `start WHO`, hold for `secs`, `end WHO`. */
function section(file: string, who: string, secs: number): string {
  return `echo "start ${who}" >> ${file}; sleep ${secs}; echo "end ${who}" >> ${file}`;
}

/** A critical section held until the test creates `release` (at most 30 s), however slow the machine. */
function heldUntil(file: string, who: string, release: string): string {
  return `echo "start ${who}" >> ${file}; i=0; while [ ! -e ${release} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo "end ${who}" >> ${file}`;
}

/** Every start is immediately followed by the end of the same holder. */
function expectExclusive(ls: string[]): void {
  expect(ls.length % 2).toBe(0);
  for (let i = 0; i < ls.length; i += 2) {
    expect(ls[i]).toMatch(/^start /);
    expect(ls[i + 1]).toBe(ls[i].replace(/^start /, 'end '));
  }
}

async function keysUnder(prefix: string): Promise<string[]> {
  return client.getAll().prefix(prefix).sort('Create', 'Ascend').keys();
}

describe('interoperation with etcdctl lock', () => {
  it('while we hold the lock, etcdctl lock waits; its key is ours in Go layout (NAME/<lease hex>)', async () => {
    const file = path.join(dir, 'we-hold');
    const mesh = new MeshProcess(['lock', 'interop1', '--etcd', etcd.endpoints, '--', 'sh', '-c', section(file, 'mesh', 1.5)]);
    await waitFor('mesh holds', () => lines(file).includes('start mesh'), 15_000);
    const [key] = await keysUnder('interop1/');
    expect(key).toMatch(/^interop1\/[0-9a-f]+$/);
    const ctl = start('etcdctl', [`--endpoints=${etcd.endpoints}`, 'lock', 'interop1', '--', 'sh', '-c', section(file, 'etcdctl', 0.1)]);
    // etcdctl queues behind us with its own key, and does not run meanwhile.
    await waitFor('etcdctl waiting', async () => (await keysUnder('interop1/')).length === 2, 10_000);
    expect(lines(file)).toEqual(['start mesh']);
    expect((await mesh.exited).code).toBe(0);
    expect(await ctl.exited).toBe(0);
    expect(lines(file)).toEqual(['start mesh', 'end mesh', 'start etcdctl', 'end etcdctl']);
    expect(await keysUnder('interop1/')).toEqual([]);
  });

  it('while etcdctl holds the lock, --try exits 3 with one line, and a blocking lock waits its turn', async () => {
    const file = path.join(dir, 'etcdctl-holds');
    const release = `${file}.release`;
    const ctl = start('etcdctl', [`--endpoints=${etcd.endpoints}`, 'lock', 'interop2', '--', 'sh', '-c', heldUntil(file, 'etcdctl', release)]);
    await waitFor('etcdctl holds', () => lines(file).includes('start etcdctl'), 10_000);

    const tried = await runMesh(['lock', 'interop2', '--try', '--etcd', etcd.endpoints, '--', 'sh', '-c', `echo ran >> ${file}`]);
    expect(tried.code).toBe(3);
    const plain = tried.stderr.filter((l) => !l.startsWith('{'));
    expect(plain).toHaveLength(1);
    expect(plain[0]).toMatch(/^mesh: lock interop2 is held by interop2\/[0-9a-f]+ \(revision \d+\)$/);
    // --try leaves no key behind.
    expect(await keysUnder('interop2/')).toHaveLength(1);

    const blocking = new MeshProcess(['lock', 'interop2', '--etcd', etcd.endpoints, '--', 'sh', '-c', section(file, 'mesh', 0.1)]);
    // Released only once the blocking lock is queued behind etcdctl's key.
    await waitFor('mesh lock queued', async () => (await keysUnder('interop2/')).length === 2, 15_000);
    writeFileSync(release, '');
    expect((await blocking.exited).code).toBe(0);
    expect(await ctl.exited).toBe(0);
    expect(lines(file)).toEqual(['start etcdctl', 'end etcdctl', 'start mesh', 'end mesh']);
  });
});

describe('mutual exclusion under contention', () => {
  it('a counter incremented under the lock by library workers (4 processes x 50) and mesh lock CLIs ends exact, sections never overlap', async () => {
    const counter = 'counter-value';
    const file = path.join(dir, 'counter-sections');
    await client.put(counter).value('0');
    // Library workers: the same EtcdMutex as `mesh lock`, each iteration a
    // fresh lock with its own lease (as a fresh CLI would have), in 4 real
    // processes. Spawning 200 CLIs costs ~0.3 s of CPU each (module loading)
    // on a 2-core machine, so the CLI share below is smaller by default;
    // MESH_LOCK_CLI_ITERATIONS=50 runs the full 4 x 50 through the CLI.
    const worker = `
      const { createEtcdClient } = require(${JSON.stringify(path.join(REPO, 'dist/core/etcd-client.js'))});
      const { EtcdMutex } = require(${JSON.stringify(path.join(REPO, 'dist/coordination/lock.js'))});
      const fs = require('node:fs');
      (async () => {
        const c = createEtcdClient({ endpoints: [process.env.EP] });
        for (let i = 0; i < 50; i++) {
          const m = new EtcdMutex(c, { name: 'counter', ttlSeconds: 10 });
          await m.acquire();
          fs.appendFileSync(process.env.FILE, 'start ' + process.env.WHO + '\\n');
          const v = Number(await c.get(${JSON.stringify(counter)}).string());
          await c.put(${JSON.stringify(counter)}).value(String(v + 1));
          fs.appendFileSync(process.env.FILE, 'end ' + process.env.WHO + '\\n');
          await m.release();
        }
        c.close();
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const workers = [0, 1, 2, 3].map((w) => start(process.execPath, ['-e', worker], { EP: etcd.endpoints, FILE: file, WHO: `lib${w}` }));

    const cliIterations = Number(process.env.MESH_LOCK_CLI_ITERATIONS ?? 6);
    const increment = `v=$(etcdctl --endpoints=${etcd.endpoints} get --print-value-only ${counter}) && etcdctl --endpoints=${etcd.endpoints} put ${counter} $((v+1)) >/dev/null`;
    const cliLoop = async (w: number) => {
      for (let i = 0; i < cliIterations; i++) {
        const r = await runMesh(['lock', 'counter', '--etcd', etcd.endpoints, '--', 'sh', '-c', `echo "start cli${w}" >> ${file}; ${increment}; echo "end cli${w}" >> ${file}`], { MESH_LOG_LEVEL: 'warn' });
        expect(r.code, r.stderr.join('\n')).toBe(0);
      }
    };
    await Promise.all([...workers.map(async (wk) => expect(await wk.exited, wk.err()).toBe(0)), ...[0, 1, 2, 3].map(cliLoop)]);

    expect(Number(await client.get(counter).string())).toBe(4 * 50 + 4 * cliIterations);
    const ls = lines(file);
    expect(ls).toHaveLength(2 * (4 * 50 + 4 * cliIterations));
    expectExclusive(ls);
    // Real contention: the holders interleave.
    const holders = ls.filter((l) => l.startsWith('start ')).map((l) => l.slice(6));
    const switches = holders.filter((h, i) => i > 0 && h !== holders[i - 1]).length;
    expect(switches).toBeGreaterThan(20);
    expect(await keysUnder('counter/')).toEqual([]);
  });

  it('is fair: waiters get the lock in arrival order', async () => {
    const file = path.join(dir, 'fair');
    const holder = new MeshProcess(['lock', 'fair', '--etcd', etcd.endpoints]);
    await waitFor('holder', () => holder.stdout.find((l) => l.startsWith('locked ')), 15_000);
    const waiters: MeshProcess[] = [];
    for (let i = 0; i < 4; i++) {
      waiters.push(new MeshProcess(['lock', 'fair', '--etcd', etcd.endpoints, '--', 'sh', '-c', `echo w${i} >> ${file}`]));
      // Arrival = the waiter's key exists (its create revision is its place).
      await waitFor(`waiter ${i} queued`, async () => (await keysUnder('fair/')).length === i + 2, 15_000);
    }
    expect(lines(file)).toEqual([]);
    holder.kill('SIGTERM');
    expect((await holder.exited).code).toBe(0);
    for (const w of waiters) expect((await w.exited).code).toBe(0);
    expect(lines(file)).toEqual(['w0', 'w1', 'w2', 'w3']);
  });
});

describe('library', () => {
  it('exposes increasing fencing tokens; tryAcquire leaves no key; an aborted wait deletes its key', async () => {
    const a = new EtcdMutex(client, { name: 'lib1', ttlSeconds: 5 });
    await a.acquire();
    expect(a.state).toBe('HELD');
    expect(a.key).toMatch(/^lib1\/[0-9a-f]+$/);
    const tokenA = BigInt(a.revision!);

    const b = new EtcdMutex(client, { name: 'lib1', ttlSeconds: 5 });
    const err = await b.tryAcquire().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockHeldError);
    expect((err as LockHeldError).holderKey).toBe(a.key);
    expect(await keysUnder('lib1/')).toEqual([a.key]);

    const c = new EtcdMutex(client, { name: 'lib1', ttlSeconds: 5 });
    const ac = new AbortController();
    const waiting = c.acquire({ signal: ac.signal });
    await waitFor('c queued', async () => (await keysUnder('lib1/')).length === 2);
    expect(c.state).toBe('WAITING');
    ac.abort(new Error('changed my mind'));
    await expect(waiting).rejects.toThrow('changed my mind');
    expect(await keysUnder('lib1/')).toEqual([a.key]);

    // release() while waiting ends the wait too.
    const d = new EtcdMutex(client, { name: 'lib1', ttlSeconds: 5 });
    const dWaiting = d.acquire().then(
      () => undefined,
      (e: unknown) => e,
    );
    await waitFor('d queued', async () => (await keysUnder('lib1/')).length === 2);
    await d.release();
    expect(String(await dWaiting)).toMatch(/given up|released/);
    expect(d.state).toBe('RELEASED');
    expect(await keysUnder('lib1/')).toEqual([a.key]);

    await a.release();
    await b.acquire();
    expect(BigInt(b.revision!)).toBeGreaterThan(tokenA);
    await b.release();
    expect(await keysUnder('lib1/')).toEqual([]);
  });

  it('reports the lock lost when its key is deleted by hand (a waiter may now own it)', async () => {
    const a = new EtcdMutex(client, { name: 'lib2', ttlSeconds: 5 });
    await a.acquire();
    const lost = new Promise<Error>((resolve) => a.once('lost', resolve));
    await etcd.etcdctl(['del', a.key!]);
    expect(await lost).toBeInstanceOf(LockLostError);
    expect(a.state).toBe('LOST');
    await a.release();
  });
});

describe('mesh lock: loss and signals', () => {
  it('stops CMD and exits 4 with one clear line when the lease is revoked under it', async () => {
    const pidFile = path.join(dir, 'lost.pid');
    const mesh = new MeshProcess(['lock', 'lost', '--ttl', '5', '--etcd', etcd.endpoints, '--', 'sh', '-c', `echo $$ > ${pidFile}; exec sleep 60`]);
    await waitFor('CMD running', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 15_000);
    const childPid = Number(readFileSync(pidFile, 'utf8'));
    const [key] = await keysUnder('lost/');
    const t0 = Date.now();
    await etcd.etcdctl(['lease', 'revoke', key.split('/')[1]]);
    const { code } = await mesh.exited;
    expect(code).toBe(4);
    expect(Date.now() - t0).toBeLessThan(4000);
    const plain = mesh.stderr.filter((l) => !l.startsWith('{'));
    expect(plain).toHaveLength(1);
    expect(plain[0]).toMatch(/^mesh: lock lost lost: .*CMD was stopped/);
    expect(() => process.kill(childPid, 0)).toThrow();
  });

  it('stops CMD and exits 4 when no keepalive is confirmed within the TTL (etcd frozen), before etcd could expire the lease', async () => {
    const pidFile = path.join(dir, 'frozen.pid');
    const mesh = new MeshProcess(['lock', 'frozen', '--ttl', '2', '--etcd', etcd.endpoints, '--', 'sh', '-c', `echo $$ > ${pidFile}; exec sleep 60`]);
    await waitFor('CMD running', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 15_000);
    const childPid = Number(readFileSync(pidFile, 'utf8'));
    const t0 = Date.now();
    etcd.signal(0, 'SIGSTOP');
    try {
      const { code } = await mesh.exited;
      expect(code).toBe(4);
      // Declared lost within the TTL (plus check period and process exit), while etcd is still frozen.
      expect(Date.now() - t0).toBeLessThan(2000 + 1500);
      expect(mesh.stderr.filter((l) => !l.startsWith('{')).join('\n')).toMatch(/no keepalive confirmed within the 2s TTL/);
      expect(() => process.kill(childPid, 0)).toThrow();
    } finally {
      etcd.signal(0, 'SIGCONT');
    }
    await etcd.waitHealthy();
  });

  it('SIGKILL of mesh stops CMD too (watchdog), and the next holder starts only after the lease expired', async () => {
    const file = path.join(dir, 'kill9');
    const holdA = `trap 'echo "end a" >> ${file}; exit 0' TERM; echo "start a" >> ${file}; while :; do sleep 0.1; done`;
    const a = new MeshProcess(['lock', 'kill9', '--ttl', '2', '--etcd', etcd.endpoints, '--', 'sh', '-c', holdA]);
    await waitFor('a holds', () => lines(file).includes('start a'), 15_000);
    const b = new MeshProcess(['lock', 'kill9', '--etcd', etcd.endpoints, '--', 'sh', '-c', section(file, 'b', 0.1)]);
    await waitFor('b queued', async () => (await keysUnder('kill9/')).length === 2, 15_000);
    const t0 = Date.now();
    a.kill('SIGKILL');
    await waitFor('CMD of a stopped', () => lines(file).includes('end a'), 5_000);
    expect((await b.exited).code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(2000 + 3000);
    expect(lines(file)).toEqual(['start a', 'end a', 'start b', 'end b']);
  });

  it('SIGTERM is forwarded to CMD, the lock is released and mesh exits with CMD code; a waiting lock released on SIGTERM leaves no key', async () => {
    const file = path.join(dir, 'sigterm');
    const script = `trap 'echo got-term >> ${file}; exit 5' TERM; echo started >> ${file}; while :; do sleep 0.1; done`;
    const mesh = new MeshProcess(['lock', 'sig', '--etcd', etcd.endpoints, '--', 'sh', '-c', script]);
    await waitFor('CMD started', () => lines(file).includes('started'), 15_000);
    const waiter = new MeshProcess(['lock', 'sig', '--etcd', etcd.endpoints, '--', 'true']);
    await waitFor('waiter queued', async () => (await keysUnder('sig/')).length === 2, 15_000);
    waiter.kill('SIGTERM');
    expect((await waiter.exited).code).toBe(143);
    expect(await keysUnder('sig/')).toHaveLength(1);

    mesh.kill('SIGTERM');
    expect((await mesh.exited).code).toBe(5);
    expect(lines(file)).toEqual(['started', 'got-term']);
    expect(await keysUnder('sig/')).toEqual([]);
  });

  it('usage errors are one line and exit 2', async () => {
    for (const args of [['lock'], ['lock', ''], ['lock', 'a b', '--', 'true'], ['lock', 'x', '--ttl', 'abc', '--', 'true'], ['lock', 'x', '--ttl', '0']]) {
      const r = await runMesh([...args, '--etcd', etcd.endpoints]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.filter(Boolean)).toHaveLength(1);
    }
  });
});
