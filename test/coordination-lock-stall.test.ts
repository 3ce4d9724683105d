import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster, startTestEtcd, stopTestEtcd } from './harness/etcd-cluster';
import { MeshProcess } from './harness/mesh-process';
import { waitFor } from './harness/ports';

/**
 * Waiters ride out etcd stalls: a lock waiter (never held) or an election
 * candidate whose session is lost while waiting queues again with a new
 * session instead of exiting 4 ("lock lost while CMD runs"). The stall: the
 * etcd leader frozen (SIGSTOP) for longer than the waiter's TTL while the
 * other 2 of 3 members answer. The waiter is given only the leader's
 * endpoint, so that its keepalives surely go to the frozen member (etcd3
 * picks among several endpoints at random); the holder talks to the others.
 */

let etcd: EtcdCluster;
let client: Etcd3;
let frozen: number | undefined;

beforeAll(async () => {
  ({ etcd, client } = await startTestEtcd(3));
});

afterAll(() =>
  stopTestEtcd({ etcd, client }, () => {
    if (frozen !== undefined) etcd.signal(frozen, 'SIGCONT');
  }),
);

describe('waiters ride out a frozen etcd leader', () => {
  it('lock waiter and election candidate: session lost while waiting -> new session, queue again; both get their turn after the holder leaves, no exit 4', async () => {
    const leader = await etcd.leaderIndex();
    const others = etcd.members.filter((_, i) => i !== leader).map((m) => m.endpoint).join(',');
    const holder = new MeshProcess(['lock', 'stall', '--ttl', '10', '--etcd', others]);
    const leaderHolder = new MeshProcess(['elect', 'stall-e', '--id', 'first', '--ttl', '10', '--etcd', others]);
    await waitFor('holder holds', () => holder.stdout.some((l) => l.startsWith('locked ')), 15_000);
    await waitFor('first leads', () => leaderHolder.stdout.includes('elected first'), 15_000);
    const waiter = new MeshProcess(['lock', 'stall', '--ttl', '2', '--etcd', etcd.members[leader].endpoint, '--', 'echo', 'waiter ran']);
    const candidate = new MeshProcess(['elect', 'stall-e', '--id', 'second', '--ttl', '2', '--etcd', etcd.members[leader].endpoint, '--', 'echo', 'candidate ran']);
    await waitFor('both queued', async () => (await client.getAll().prefix('stall/').keys()).length === 2 && (await client.getAll().prefix('stall-e/').keys()).length === 2, 15_000);

    frozen = leader;
    etcd.signal(leader, 'SIGSTOP');
    // The waiter notices its session is gone (no keepalive answer within its 2 s TTL) and queues again.
    // (Before the fix the waiter exited 4 here, "lock lost", though it never held the lock.)
    await waitFor('waiter requeued or exited', () => waiter.exitCode !== undefined || waiter.logs.some((l) => l.event === 'lock.requeue'), 10_000);
    expect(waiter.exitCode, waiter.stderr.filter((l) => !l.includes('"level":30')).slice(-5).join('\n')).toBeUndefined();
    const requeued = await waiter.waitForLog('lock.requeue', {}, 1_000);
    await candidate.waitForLog('election.campaign_failed', {}, 10_000);
    await new Promise((r) => setTimeout(r, 1000)); // keep the stall past the first retry
    etcd.signal(leader, 'SIGCONT');
    frozen = undefined;
    expect(waiter.exitCode).toBeUndefined();
    expect(candidate.exitCode).toBeUndefined();

    // Back in line once the member answers again; the holders leave; the waiters get their turn.
    await waitFor('both queued again', async () => (await client.getAll().prefix('stall/').keys()).length === 2 && (await client.getAll().prefix('stall-e/').keys()).length === 2, 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\nwaiter: ${waiter.stderr.slice(-6).join('\n')}\ncandidate: ${candidate.stderr.slice(-6).join('\n')}`);
    });
    holder.kill('SIGTERM');
    leaderHolder.kill('SIGTERM');
    expect(await holder.exitWithin(10_000)).toBe(0);
    expect(await waiter.exitWithin(15_000)).toBe(0);
    expect(waiter.stdout).toEqual(['waiter ran']);
    expect(await candidate.exitWithin(15_000)).toBe(0);
    expect(candidate.stdout).toEqual(['elected second', 'candidate ran']);
    expect(await leaderHolder.exitWithin(10_000)).toBe(0);
    console.log(`[stall] waiter requeued: ${String(requeued.msg)}`);
  });
});
