import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster, startTestEtcd, stopTestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { BarrierTimeoutError, DoubleBarrier, TooManyParticipantsError } from '../coordination/barrier';

/**
 * The barrier against a real etcd: N `mesh barrier` processes, none returns
 * before the Nth has entered; --timeout; the library's double barrier
 * (enter and leave).
 */

let etcd: EtcdCluster;
let client: Etcd3;
const barriers: DoubleBarrier[] = [];

beforeAll(async () => {
  ({ etcd, client } = await startTestEtcd());
});

afterAll(() =>
  stopTestEtcd({ etcd, client }, async () => {
    for (const b of barriers) await b.close();
  }),
);

function barrier(name: string, count: number): DoubleBarrier {
  const b = new DoubleBarrier(client, { name, count, ttlSeconds: 5 });
  barriers.push(b);
  return b;
}

async function waiters(name: string): Promise<number> {
  return client.getAll().prefix(`${name}/waiters/`).count();
}

describe('mesh barrier', () => {
  it('N processes enter; none returns before the Nth has entered; all return then', async () => {
    const N = 4;
    const procs: MeshProcess[] = [];
    const exitedAt = new Map<MeshProcess, number>();
    for (let i = 0; i < N - 1; i++) {
      const p = new MeshProcess(['barrier', 'b1', '--count', String(N), '--etcd', etcd.endpoints]);
      void p.exited.then(() => exitedAt.set(p, Date.now()));
      procs.push(p);
    }
    await waitFor('N-1 entered', async () => (await waiters('b1')) === N - 1, 15_000);
    // Give an early return every chance to show itself.
    await new Promise((r) => setTimeout(r, 1000));
    expect(exitedAt.size).toBe(0);
    for (const p of procs) expect(p.stdout).toEqual([]);

    const lastStartedAt = Date.now();
    const last = new MeshProcess(['barrier', 'b1', '--count', String(N), '--etcd', etcd.endpoints]);
    void last.exited.then(() => exitedAt.set(last, Date.now()));
    procs.push(last);
    const results = await Promise.all(procs.map((p) => p.exited));
    for (const r of results) expect(r.code).toBe(0);
    for (const p of procs) {
      expect(p.stdout).toEqual([`barrier b1: ${N} participants entered`]);
      expect(exitedAt.get(p)!).toBeGreaterThanOrEqual(lastStartedAt);
    }
    // Participants withdraw their keys on the way out.
    expect(await waiters('b1')).toBe(0);
  });

  it('--timeout exits 1 with one clear line and stops counting us', async () => {
    const t0 = Date.now();
    const r = await runMesh(['barrier', 'b2', '--count', '2', '--timeout', '1s', '--etcd', etcd.endpoints]);
    expect(r.code).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(r.stderr.filter((l) => !l.startsWith('{'))).toEqual(['mesh: barrier b2: enter timed out after 1000 ms with 1 of 2 participants']);
    expect(await waiters('b2')).toBe(0);
  });

  it('usage errors are one line and exit 2', async () => {
    for (const args of [['barrier', 'b'], ['barrier', '--count', '2'], ['barrier', 'b', '--count', '0'], ['barrier', 'b', '--count', 'x'], ['barrier', 'b', '--count', '2', '--timeout', '0'], ['barrier', 'b/', '--count', '2']]) {
      const r = await runMesh([...args, '--etcd', etcd.endpoints]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.filter(Boolean), args.join(' ')).toHaveLength(1);
    }
  });
});

describe('DoubleBarrier (library)', () => {
  it('enter returns for all once count entered; leave returns for all once the last left', async () => {
    const [a, b, c] = [barrier('b3', 3), barrier('b3', 3), barrier('b3', 3)];
    let entered = 0;
    const ea = a.enter().then(() => entered++);
    const eb = b.enter().then(() => entered++);
    await waitFor('2 in', async () => (await waiters('b3')) === 2);
    await new Promise((r) => setTimeout(r, 300));
    expect(entered).toBe(0);
    await c.enter();
    await Promise.all([ea, eb]);
    expect(entered).toBe(2);

    let left = 0;
    const la = a.leave().then(() => left++);
    const lb = b.leave().then(() => left++);
    await new Promise((r) => setTimeout(r, 500));
    expect(left).toBe(0);
    await c.leave();
    await Promise.all([la, lb]);
    expect(left).toBe(2);
    expect(await waiters('b3')).toBe(0);
    expect(await client.get('b3/ready').exists()).toBe(false);
  });

  it('refuses a participant beyond count, and a timed-out enter withdraws', async () => {
    const [a, b] = [barrier('b4', 1), barrier('b4', 1)];
    await a.enter();
    await expect(b.enter()).rejects.toBeInstanceOf(TooManyParticipantsError);
    expect(await waiters('b4')).toBe(1);
    await a.close();

    const lonely = barrier('b5', 2);
    const err = await lonely.enter({ timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BarrierTimeoutError);
    expect((err as BarrierTimeoutError).present).toBe(1);
    expect(await waiters('b5')).toBe(0);
  });
});
