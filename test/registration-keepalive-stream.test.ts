import { describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { useTestEtcd } from './harness/etcd-cluster';
import { createEtcdClient } from '../core/etcd-client';
import { leaseKeepAliveFor } from '../core/lease-keepalive-stream';
import { LeaseRegistration } from '../balancer/registration-lease';
import type { RegistrationState } from '../balancer/registration';
import { leaseKeepAliveCounters, openKeepAliveStreams } from '../bench/scale-keepalive';

/**
 * Every lease of one etcd client on ONE LeaseKeepAlive stream
 * (core/lease-keepalive-stream.ts), counted from etcd's side: each member's
 * /metrics (`grpc_server_started_total` - `grpc_server_handled_total` for
 * LeaseKeepAlive = streams open on it). A 3-member etcd; the registrations
 * use a client of their own, so nothing else in the file holds a lease.
 */
describe('registrations: one LeaseKeepAlive stream per etcd client', () => {
  const clients: Etcd3[] = [];
  const t = useTestEtcd(3, () => {
    for (const c of clients) c.close();
  });

  const newClient = () => {
    const c = createEtcdClient({ endpoints: t.etcd!.members.map((m) => m.endpoint) });
    clients.push(c);
    return c;
  };
  const sum = (xs: (number | undefined)[]) => xs.reduce<number>((s, x) => s + (x ?? 0), 0);
  const until = async (what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (await cond()) return;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  };
  const keysOf = async (prefix: string) => (await t.client!.getAll().prefix(`${prefix}/greeter/`).exec()).kvs;

  /** `n` registrations on `client`, started; each one's state changes recorded. */
  async function register(client: Etcd3, prefix: string, n: number, ttlSeconds: number) {
    const regs = Array.from({ length: n }, (_, i) => new LeaseRegistration(client, { prefix, service: 'greeter', addr: `10.7.${i >> 8}.${i & 255}:8080`, ttlSeconds }));
    const states: RegistrationState[][] = regs.map(() => []);
    regs.forEach((r, i) => r.on('state', (next) => states[i].push(next)));
    await Promise.all(regs.map((r) => r.start()));
    return { regs, states };
  }

  /** Close every registration; then no key, no lease and no stream is left in etcd (leases released at a loss expire within their TTL). */
  async function closeAndCheckNothingLeft(regs: LeaseRegistration[], prefix: string, ttlSeconds: number) {
    await Promise.all(regs.map((r) => r.close()));
    expect((await keysOf(prefix)).length).toBe(0);
    await until('every lease gone from etcd', async () => (await t.client!.leaseClient.leaseLeases()).leases.length === 0, (ttlSeconds + 3) * 1000, 100);
    await until('no LeaseKeepAlive stream open', async () => sum(await openKeepAliveStreams(t.etcd!.members)) === 0, 5_000, 100);
  }

  it('1,000 registrations on one client: exactly 1 LeaseKeepAlive stream in etcd, every lease kept alive, close() revokes all', async () => {
    expect(sum(await openKeepAliveStreams(t.etcd!.members))).toBe(0);
    const client = newClient();
    const t0 = performance.now();
    const { regs, states } = await register(client, 'ka1', 1_000, 5);
    const startMs = performance.now() - t0;
    const keeper = leaseKeepAliveFor(client);
    expect((await keysOf('ka1')).length).toBe(1_000);
    expect(new Set(regs.map((r) => r.leaseId)).size).toBe(1_000);
    expect(sum(await openKeepAliveStreams(t.etcd!.members))).toBe(1);
    const received0 = sum((await leaseKeepAliveCounters(t.etcd!.members)).map((c) => c?.received));
    const confirmed0 = keeper.stats.confirmed;
    // Past TTL/3 (1.67 s): each lease had another keepalive, and etcd holds each for (nearly) its full TTL.
    await new Promise((r) => setTimeout(r, 2_200));
    const received = sum((await leaseKeepAliveCounters(t.etcd!.members)).map((c) => c?.received)) - received0;
    const s = keeper.stats;
    console.log(`[keepalive] 1,000 registrations started in ${Math.round(startMs)} ms; ${s.streamsOpened} stream opened; ${s.confirmed - confirmed0} keepalives confirmed and ${received} received by etcd in 2.2 s`);
    expect(s).toMatchObject({ leases: 1_000, streamOpen: true, streamsOpened: 1, streamFailures: 0, lost: 0 });
    expect(s.confirmed - confirmed0).toBeGreaterThanOrEqual(1_000);
    expect(received).toBeGreaterThanOrEqual(1_000);
    expect(sum(await openKeepAliveStreams(t.etcd!.members))).toBe(1);
    for (const r of [regs[0], regs[499], regs[999]]) {
      const ttl = await client.leaseClient.leaseTimeToLive({ ID: r.leaseId! });
      expect(Number(ttl.TTL)).toBeGreaterThanOrEqual(3);
    }
    expect(states.every((x) => x.join() === 'GRANTING,REGISTERED')).toBe(true);
    await closeAndCheckNothingLeft(regs, 'ka1', 5);
    expect(keeper.stats).toMatchObject({ leases: 0, streamOpen: false, streamsOpened: 1 });
  }, 60_000);

  it('every member SIGSTOPped longer than the TTL: each lease reported lost at its deadline, granted again after SIGCONT, keys rewritten, one stream, nothing left', async () => {
    const TTL = 2;
    const client = newClient();
    const { regs, states } = await register(client, 'ka2', 200, TTL);
    const keeper = leaseKeepAliveFor(client);
    const first = regs.map((r) => r.leaseId);
    const frozenAt = Date.now();
    for (let i = 0; i < 3; i++) t.etcd!.signal(i, 'SIGSTOP');
    let lostByMs: number;
    try {
      // No keepalive can be confirmed: each lease is lost within its TTL of the last confirmed one.
      await until('every registration LOST', () => regs.every((r) => r.state === 'LOST'), (TTL + 2) * 1000, 20);
      lostByMs = Date.now() - frozenAt;
      await new Promise((r) => setTimeout(r, Math.max(0, (TTL + 1) * 1000 - (Date.now() - frozenAt))));
      expect(keeper.stats.leases).toBe(0);
      expect(keeper.stats.streamOpen).toBe(false);
    } finally {
      for (let i = 0; i < 3; i++) t.etcd!.signal(i, 'SIGCONT');
    }
    const thawedAt = Date.now();
    await until('every registration back under a new lease', () => regs.every((r, i) => r.state === 'REGISTERED' && r.leaseId !== first[i]), 15_000, 20);
    const backMs = Date.now() - thawedAt;
    await until('every key in etcd under its registration lease', async () => {
      const kvs = await keysOf('ka2');
      const byKey = new Map(kvs.map((kv) => [kv.key.toString(), kv.lease]));
      return kvs.length === 200 && regs.every((r) => byKey.get(r.key) === r.leaseId);
    }, 10_000, 100);
    await until('one LeaseKeepAlive stream', async () => sum(await openKeepAliveStreams(t.etcd!.members)) === 1, 5_000, 100);
    const s = keeper.stats;
    console.log(`[keepalive] frozen ${TTL + 1} s: every lease lost ${lostByMs} ms after SIGSTOP; all 200 back ${backMs} ms after SIGCONT; streams opened ${s.streamsOpened}, failures ${s.streamFailures}, leases lost ${s.lost}`);
    expect(lostByMs).toBeLessThanOrEqual((TTL + 1) * 1000);
    expect(s.lost).toBe(200);
    // No storm: a stuck stream or two while the members froze, one after the thaw.
    expect(s.streamsOpened).toBeLessThanOrEqual(5);
    expect(states.every((x) => x.slice(0, 4).join() === 'GRANTING,REGISTERED,LOST,GRANTING' && x[x.length - 1] === 'REGISTERED')).toBe(true);
    await closeAndCheckNothingLeft(regs, 'ka2', TTL);
  }, 60_000);

  it('the member holding the stream SIGKILLed: the stream moves to another member, no lease lost; restarted, nothing left', async () => {
    const TTL = 5;
    const etcd = t.etcd!;
    await etcd.waitHealthy();
    const client = newClient();
    const { regs, states } = await register(client, 'ka3', 200, TTL);
    const keeper = leaseKeepAliveFor(client);
    const leaseIds = regs.map((r) => r.leaseId);
    const open = await openKeepAliveStreams(etcd.members);
    expect(sum(open)).toBe(1);
    const victim = open.findIndex((n) => n === 1);
    const confirmedBefore = keeper.stats.confirmed;
    const killedAt = Date.now();
    await etcd.kill(victim);
    try {
      await until('the stream open on another member', async () => sum(await openKeepAliveStreams(etcd.members)) === 1 && keeper.stats.confirmed >= confirmedBefore + 200, 10_000, 100);
      const movedMs = Date.now() - killedAt;
      // Another round of keepalives on the new stream, then nothing lost, nothing re-granted.
      const confirmed = keeper.stats.confirmed;
      await until('a full round of keepalives', () => keeper.stats.confirmed >= confirmed + 200, (TTL / 3 + 2) * 1000, 50);
      console.log(`[keepalive] member m${victim} (the stream's) killed: stream open on another member and every lease confirmed ${movedMs} ms later; streams opened ${keeper.stats.streamsOpened}, failures ${keeper.stats.streamFailures}`);
      expect(keeper.stats.lost).toBe(0);
      expect(regs.map((r) => r.leaseId)).toEqual(leaseIds);
      expect(states.every((x) => x.join() === 'GRANTING,REGISTERED')).toBe(true);
      expect(keeper.stats.streamsOpened).toBeLessThanOrEqual(5);
    } finally {
      await etcd.restart(victim);
    }
    expect((await keysOf('ka3')).length).toBe(200);
    await closeAndCheckNothingLeft(regs, 'ka3', TTL);
  }, 60_000);
});
