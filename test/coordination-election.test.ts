import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster, startTestEtcd, stopTestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { Election, LeadershipLostError } from '../coordination/election';

/**
 * Leader election against a real etcd: interoperation with the real
 * `etcdctl elect` and `etcdctl elect -l` both ways, failover after SIGKILL
 * within the TTL, never two leaders at once, loss of the lease.
 *
 * "Never two leaders": leaders run a CMD that writes `start X` when it
 * starts and `end X` when it stops (a TERM trap) to one file; exclusion
 * holds iff every `start` is directly followed by the same holder's `end`.
 */

let etcd: EtcdCluster;
let client: Etcd3;
let dir: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  ({ etcd, client } = await startTestEtcd());
  dir = mkdtempSync(path.join(tmpdir(), 'mesh-elect-test-'));
});

afterAll(() =>
  stopTestEtcd({ etcd, client }, () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  }),
);

function start(cmd: string, args: string[]): { proc: ChildProcess; exited: Promise<number | null>; out: () => string } {
  const proc = spawn(cmd, args, { env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.resume();
  const exited = new Promise<number | null>((resolve) =>
    proc.once('close', (code) => {
      children.delete(proc);
      resolve(code);
    }),
  );
  return { proc, exited, out: () => out };
}

function lines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

async function candidates(name: string): Promise<{ key: string; value: string }[]> {
  const res = await client.getAll().prefix(`${name}/`).sort('Create', 'Ascend').exec();
  return res.kvs.map((kv) => ({ key: kv.key.toString(), value: kv.value.toString() }));
}

/** The value lines `etcdctl elect -l` printed (it prints key, then value, per change). */
function etcdctlObserved(out: string, name: string): string[] {
  return out.split('\n').filter((l) => l !== '' && !l.startsWith(`${name}/`));
}

describe('interoperation with etcdctl elect', () => {
  it('etcdctl elect -l sees our leader, --observe sees etcdctl leaders, and leadership passes both ways in campaign order', async () => {
    const ep = `--endpoints=${etcd.endpoints}`;
    const ctlObserver = start('etcdctl', [ep, 'elect', '-l', 'e1']);
    const meshObserver = new MeshProcess(['elect', 'e1', '--observe', '--etcd', etcd.endpoints]);
    await meshObserver.waitForLog('election.observing');

    const alpha = new MeshProcess(['elect', 'e1', '--id', 'alpha', '--etcd', etcd.endpoints]);
    await waitFor('alpha elected', () => alpha.stdout.includes('elected alpha'), 15_000);
    const [alphaKey] = await candidates('e1');
    expect(alphaKey).toEqual({ key: expect.stringMatching(/^e1\/[0-9a-f]+$/), value: 'alpha' });
    await waitFor('etcdctl -l sees alpha', () => etcdctlObserved(ctlObserver.out(), 'e1').includes('alpha'), 10_000);
    await waitFor('mesh --observe sees alpha', () => meshObserver.stdout.includes('alpha'), 10_000);

    // etcdctl campaigns behind us and does not lead while we do.
    const beta = start('etcdctl', [ep, 'elect', 'e1', 'beta']);
    await waitFor('beta queued', async () => (await candidates('e1')).length === 2, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(beta.out()).toBe('');
    alpha.kill('SIGTERM');
    expect((await alpha.exited).code).toBe(0);
    // etcdctl prints its key and value once elected.
    await waitFor('beta elected', () => beta.out().includes('beta'), 10_000);
    await waitFor('mesh --observe sees beta', () => meshObserver.stdout.includes('beta'), 10_000);

    // We campaign behind etcdctl and lead once it resigns.
    const gamma = new MeshProcess(['elect', 'e1', '--id', 'gamma', '--etcd', etcd.endpoints]);
    await waitFor('gamma queued', async () => (await candidates('e1')).length === 2, 15_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(gamma.stdout).toEqual([]);
    beta.proc.kill('SIGINT');
    await beta.exited;
    await waitFor('gamma elected', () => gamma.stdout.includes('elected gamma'), 10_000);
    await waitFor('etcdctl -l sees gamma', () => etcdctlObserved(ctlObserver.out(), 'e1').includes('gamma'), 10_000);
    await waitFor('mesh --observe sees gamma', () => meshObserver.stdout.includes('gamma'), 10_000);

    expect(meshObserver.stdout).toEqual(['alpha', 'beta', 'gamma']);
    expect(etcdctlObserved(ctlObserver.out(), 'e1')).toEqual(['alpha', 'beta', 'gamma']);
    gamma.kill('SIGTERM');
    expect((await gamma.exited).code).toBe(0);
    expect(await candidates('e1')).toEqual([]);
    meshObserver.kill('SIGTERM');
    expect((await meshObserver.exited).code).toBe(0);
  });
});

describe('failover', () => {
  it('after the leader is SIGKILLed a new leader is elected within the TTL; never two leaders at once', async () => {
    const file = path.join(dir, 'terms');
    const ttl = 2;
    const work = (id: string) => `trap 'echo "end ${id}" >> ${file}; exit 0' TERM; echo "start ${id}" >> ${file}; while :; do sleep 0.05; done`;
    const observer = new MeshProcess(['elect', 'e2', '--observe', '--etcd', etcd.endpoints]);
    await observer.waitForLog('election.observing');
    const c: MeshProcess[] = [];
    for (const id of ['c0', 'c1', 'c2']) {
      c.push(new MeshProcess(['elect', 'e2', '--id', id, '--ttl', String(ttl), '--etcd', etcd.endpoints, '--', 'sh', '-c', work(id)]));
      await waitFor(`${id} campaigning`, async () => (await candidates('e2')).length === c.length, 15_000);
    }
    await waitFor('c0 works', () => lines(file).includes('start c0'), 10_000);
    expect(c[0].stdout).toEqual(['elected c0']);

    const killedAt = Date.now();
    c[0].kill('SIGKILL');
    await waitFor('c1 elected', () => c[1].stdout.includes('elected c1'), (ttl + 5) * 1000);
    const failoverMs = Date.now() - killedAt;
    // The lease of c0 expires at most a TTL after its last keepalive; the next
    // candidate is waiting on that very key.
    expect(failoverMs).toBeLessThan(ttl * 1000 + 1500);
    // etcd agrees: the lowest create revision is c1's key.
    expect((await candidates('e2'))[0].value).toBe('c1');
    expect(c[2].stdout).toEqual([]);

    // A clean resign hands over at once (no TTL wait).
    await waitFor('c1 works', () => lines(file).includes('start c1'), 10_000);
    const resignAt = Date.now();
    c[1].kill('SIGTERM');
    await waitFor('c2 elected', () => c[2].stdout.includes('elected c2'), 10_000);
    expect(Date.now() - resignAt).toBeLessThan(1500);
    await waitFor('c2 works', () => lines(file).includes('start c2'), 10_000);
    c[2].kill('SIGTERM');
    await c[2].exited;

    // c0's work was stopped by its watchdog when c0 was killed, before c1 started.
    expect(lines(file)).toEqual(['start c0', 'end c0', 'start c1', 'end c1', 'start c2', 'end c2']);
    await waitFor('observer saw c2', () => observer.stdout.includes('c2'), 5_000);
    expect(observer.stdout).toEqual(['c0', 'c1', 'c2']);
  });

  it('a leader whose lease is revoked stops its CMD at once, logs the loss and campaigns again with a new lease', async () => {
    const file = path.join(dir, 'revoked');
    const work = `trap 'echo end >> ${file}; exit 0' TERM; echo start >> ${file}; while :; do sleep 0.05; done`;
    const solo = new MeshProcess(['elect', 'e3', '--id', 'solo', '--ttl', '5', '--etcd', etcd.endpoints, '--', 'sh', '-c', work]);
    await waitFor('solo works', () => lines(file).includes('start'), 15_000);
    const [first] = await candidates('e3');
    await etcd.etcdctl(['lease', 'revoke', first.key.split('/')[1]]);
    await solo.waitForLog('election.lost');
    await waitFor('solo re-elected', () => solo.stdout.filter((l) => l === 'elected solo').length === 2, 10_000);
    await waitFor('work restarted', () => lines(file).length === 3, 10_000);
    expect(lines(file)).toEqual(['start', 'end', 'start']);
    const [second] = await candidates('e3');
    expect(second.key).not.toBe(first.key);
    solo.kill('SIGTERM');
    expect((await solo.exited).code).toBe(0);
    expect(await candidates('e3')).toEqual([]);
  });
});

describe('library and CLI contract', () => {
  it('Election: campaign, proclaim, lost on key deletion, campaign again', async () => {
    const a = new Election(client, { name: 'e4', ttlSeconds: 5 });
    const b = new Election(client, { name: 'e4', ttlSeconds: 5 });
    await a.campaign('a');
    expect(a.state).toBe('LEADER');
    const bElected = b.campaign('b');
    await waitFor('b queued', async () => (await candidates('e4')).length === 2);
    await a.proclaim('a2');
    expect(await a.leader()).toMatchObject({ value: 'a2', key: a.key });

    const lost = new Promise<Error>((resolve) => a.once('lost', resolve));
    await etcd.etcdctl(['del', a.key!]);
    expect(await lost).toBeInstanceOf(LeadershipLostError);
    expect(a.state).toBe('LOST');
    await bElected;
    expect(b.state).toBe('LEADER');

    const again = a.campaign('a3');
    await waitFor('a queued again', async () => (await candidates('e4')).length === 2);
    await b.resign();
    await again;
    expect(await a.leader()).toMatchObject({ value: 'a3' });
    await a.resign();
    expect(await candidates('e4')).toEqual([]);
  });

  it('runs CMD as leader, resigns when it ends and exits with its code', async () => {
    const r = await runMesh(['elect', 'e5', '--id', 'once', '--etcd', etcd.endpoints, '--', 'sh', '-c', 'exit 7']);
    expect(r.code).toBe(7);
    expect(r.stdout).toEqual(['elected once']);
    expect(await candidates('e5')).toEqual([]);
  });

  it('usage errors are one line and exit 2', async () => {
    for (const args of [['elect'], ['elect', 'x'], ['elect', 'x', '--id', ''], ['elect', 'x', '--id', 'a', '--observe'], ['elect', 'x', '--observe', '--', 'true'], ['elect', 'x', '--id', 'a', '--ttl', 'x']]) {
      const r = await runMesh([...args.slice(0, 2), '--etcd', etcd.endpoints, ...args.slice(2)]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.filter(Boolean), args.join(' ')).toHaveLength(1);
    }
  });
});
