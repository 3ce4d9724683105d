import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { useTestEtcd, EtcdCluster } from './harness/etcd-cluster';
import { MeshProcess } from './harness/mesh-process';
import { runMeshInProcess } from './harness/mesh-inprocess';
import { waitFor } from './harness/ports';
import { createEtcdClient } from '../core/etcd-client';
import { setMeshLogger } from '../core/logger';
import { encodeEndpoint } from '../balancer/endpoint-codec';
import { EtcdResolver, ETCD_CLIENT_OPTION, registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';
import { AUTO_SUBSET_ABOVE, CLIENT_ID_OPTION, defaultClientId, nextHeld, subsetFor, SUBSET_SIZE_OPTION } from '../balancer/subset';
import { apertureSubset } from '../balancer/subset-aperture';
import { autoSubsetSize, idealSubset, identitySeed, type SubsetIdentity } from '../balancer/subset-auto';
import { MEMBERS_ROOT, membersPrefix, subsetMembersClosed } from '../balancer/subset-members';
import { SUBSET_OVERLAP_MS, SUBSET_OVERLAP_OPTION } from '../balancer/subset-plan';
import { GreeterServer } from '../services/greeter-server';

/**
 * Subsetting without client ids: each subsetting client holds a lease-bound
 * key under __mesh/clients/<prefix>/<service>/ and uses its rank among the
 * live ones (by create revision) on the aperture ring (balancer/
 * subset-members.ts, subset-aperture.ts); and auto's taper at the 100-backend
 * boundary (subset-auto.ts). The math first (hashed ids, SRE subsets over
 * ranks, the ring over ranks), then real resolvers against one etcd, then
 * real `mesh load` processes.
 */

const servers = (n: number) => Array.from({ length: n }, (_, i) => `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}:50051`);
const count = (sets: Iterable<readonly string[]>, backends: readonly string[]) => {
  const per = new Map(backends.map((b) => [b, 0]));
  for (const s of sets) for (const b of s) per.set(b, (per.get(b) ?? 0) + 1);
  return [...per.values()];
};
const range = (v: number[]) => `${Math.min(...v)}..${Math.max(...v)}`;
/** Connections one client opens going from `a` to `b`. */
const opened = (a: readonly string[], b: readonly string[]) => {
  const had = new Set(a);
  return b.filter((x) => !had.has(x)).length;
};

type Pick = (backends: string[], rank: number, members: number, size: number) => string[];
const sreOverRanks: Pick = (b, r, _m, n) => subsetFor(b, r, n);
const ring: Pick = apertureSubset;

/** Connections moved among the clients that stay when one joins (rank M) or leaves (rank `leave`): total and the most of one client. */
function membershipMoves(pick: Pick, backends: string[], members: number, size: number, leave?: number): { total: number; worst: number } {
  let total = 0;
  let worst = 0;
  for (let r = 0; r < members; r++) {
    if (r === leave) continue;
    const before = pick(backends, r, members, size);
    const after = leave === undefined ? pick(backends, r, members + 1, size) : pick(backends, r > leave ? r - 1 : r, members - 1, size);
    const m = opened(before, after);
    total += m;
    worst = Math.max(worst, m);
  }
  return { total, worst };
}

describe('--client-id usage', () => {
  it('an integer 0..2^31-1 or "hash"; anything else, or with --subset 0, exits 2 with one line', async () => {
    for (const [args, pattern] of [
      [['client', '--client-id', 'foo'], /"foo" is neither an integer nor "hash"/],
      [['client', '--client-id', '-1'], /out of range 0\.\.2147483647/],
      [['load', '--client-id', 'hash', '--subset', '0'], /only matters when subsetting/],
      [['load', '--client-id', 'hash', '--target', 'ipv4:127.0.0.1:1'], /does not apply to --target/],
    ] as const) {
      const r = await runMeshInProcess([...args, '--etcd', '127.0.0.1:1']);
      const lines = r.stderr.filter((l) => l.trim() !== '' && !l.startsWith('{'));
      expect({ args, code: r.code, lines: lines.length }).toEqual({ args, code: 2, lines: 1 });
      expect(lines[0]).toMatch(pattern);
    }
  });
});

describe('membership ranks: the math', () => {
  it('balance: hashed ids vs ranks (SRE subsets over ranks, the aperture ring over ranks)', () => {
    const report: string[] = [];
    for (const [M, N, S, lo, hi] of [
      [10, 3, 10, 2, 4],
      [100, 10, 50, 0.8 * 20, 1.2 * 20],
    ] as const) {
      const b = servers(S);
      const hashed = count(Array.from({ length: M }, (_, i) => subsetFor(b, defaultClientId(`host-${i}`, 1000 + i), N)), b);
      const sre = count(Array.from({ length: M }, (_, r) => sreOverRanks(b, r, M, N)), b);
      const rg = count(Array.from({ length: M }, (_, r) => ring(b, r, M, N)), b);
      report.push(`${M} clients, N=${N}, ${S} servers: hashed ids ${range(hashed)}, SRE over ranks ${range(sre)}, ring over ranks ${range(rg)} (mean ${(M * N) / S})`);
      expect(Math.min(...rg)).toBeGreaterThanOrEqual(lo);
      expect(Math.max(...rg)).toBeLessThanOrEqual(hi);
      expect(rg.reduce((x, y) => x + y, 0)).toBe(M * N);
      // The ring is exact: floor or ceil of the mean.
      expect(Math.max(...rg) - Math.min(...rg)).toBeLessThanOrEqual(1);
    }
    // Every member count, not only multiples of a round: within one of the mean.
    for (let M = 1; M <= 40; M++) {
      const per = count(Array.from({ length: M }, (_, r) => ring(servers(10), r, M, 3)), servers(10));
      expect(Math.max(...per) - Math.min(...per), `M=${M}`).toBeLessThanOrEqual(1);
    }
    console.log(`balance: ${report.join('; ')}`);
  });

  it('a client joining or leaving: the ring moves at most one connection per client (S <= M), far fewer in all than SRE subsets over ranks', () => {
    const report: string[] = [];
    for (const [M, N, S] of [
      [10, 3, 10],
      [100, 10, 50],
      [100, 20, 1000],
    ] as const) {
      const b = servers(S);
      const out: Record<string, string> = {};
      for (const [name, pick] of [['sre', sreOverRanks], ['ring', ring]] as const) {
        const join = membershipMoves(pick, b, M, N);
        let leaveTotal = 0;
        let leaveMax = 0;
        let leaveWorst = 0;
        // Every leaving rank (every 10th over 1,000 servers: the picks cost).
        const leaving = Array.from({ length: M }, (_, l) => l).filter((l) => S < 1000 || l % 10 === 3);
        for (const l of leaving) {
          const m = membershipMoves(pick, b, M, N, l);
          leaveTotal += m.total;
          leaveMax = Math.max(leaveMax, m.total);
          leaveWorst = Math.max(leaveWorst, m.worst);
        }
        out[name] = `join ${join.total} (most of one client ${join.worst}), leave mean ${(leaveTotal / leaving.length).toFixed(1)} max ${leaveMax} (most of one client ${leaveWorst})`;
        if (name === 'ring') {
          // Positions shift by under S/M backends each: at most ceil(S/M) per client, about S/2 in all, never more than S.
          const perClient = Math.ceil(S / M);
          expect(join.worst).toBeLessThanOrEqual(perClient);
          expect(leaveWorst).toBeLessThanOrEqual(perClient);
          expect(join.total).toBeLessThanOrEqual(S);
          expect(leaveMax).toBeLessThanOrEqual(S);
        } else {
          // SRE subsets do not depend on M (a join moves nothing) but ids k and k-1 share little: a leave re-deals the later half.
          expect(join.total).toBe(0);
        }
      }
      report.push(`${M} clients N=${N} over ${S} (of ${M * N} connections): SRE over ranks ${out.sre}; ring ${out.ring}`);
    }
    console.log(`membership churn: ${report.join('; ')}`);
  });
  it('a backend joining (the ideal re-dealt): the ring moves fewer connections than SRE subsets, which re-deal all when ceil(S/N) changes', () => {
    const report: string[] = [];
    for (const [M, N, S] of [
      [10, 3, 10],
      [100, 10, 50],
      [100, 10, 49],
    ] as const) {
      const all = servers(S + 1);
      const out: Record<string, number> = {};
      for (const [name, pick] of [['sre', sreOverRanks], ['ring', ring]] as const) {
        let total = 0;
        // Mean over where the new backend falls in the order.
        for (let j = 0; j <= S; j++) {
          const before = all.filter((_, i) => i !== j);
          for (let r = 0; r < M; r++) total += opened(pick(before, r, M, N), pick(all, r, M, N));
        }
        out[name] = Math.round(total / (S + 1));
      }
      report.push(`${M} clients N=${N}, ${S} -> ${S + 1} servers: SRE ${out.sre}, ring ${out.ring} (the new one's share: ${Math.round((M * N) / (S + 1))})`);
      expect(out.ring).toBeLessThanOrEqual(out.sre + (M * N) / (S + 1));
    }
    console.log(`backend join, connections opened (mean over its place): ${report.join('; ')}`);
  });
});

describe('auto at the 100-backend boundary: the taper', () => {
  /** Per-client moves of `M` clients through registry sizes `sizes` (one key added or removed per step), with the resolver's stateful rule. */
  function walk(sizes: number[], M: number, who: (i: number) => SubsetIdentity, rule: 'taper' | 'step'): { perStep: number[]; worstClient: number[] } {
    const all = servers(Math.max(...sizes));
    const state = Array.from({ length: M }, () => ({ registry: undefined as string[] | undefined, held: undefined as string[] | undefined }));
    const perStep: number[] = [];
    const worstClient: number[] = [];
    for (const S of sizes) {
      const registry = all.slice(0, S);
      let moved = 0;
      let worst = 0;
      for (let i = 0; i < M; i++) {
        const id = who(i);
        // The rule before: every backend up to 100, a subset of 20 above, state forgotten below.
        const size = rule === 'taper' ? autoSubsetSize(S) : S > AUTO_SUBSET_ABOVE ? 20 : S;
        const prev = rule === 'step' && S <= AUTO_SUBSET_ABOVE ? undefined : state[i];
        const held = size >= S ? registry : nextHeld(prev?.registry, prev?.held, registry, idealSubset(registry, id, size, rule === 'taper'), size, identitySeed(id, `m${i}`));
        if (state[i].held) {
          const m = opened(state[i].held!, held) + opened(held, state[i].held!);
          moved += m;
          worst = Math.max(worst, m);
        }
        state[i] = { registry, held };
      }
      perStep.push(moved);
      worstClient.push(worst);
    }
    return { perStep, worstClient };
  }

  it('a registry of 100 that gains one key and loses it again moves about one connection per client, not 80 and back', () => {
    const M = 100;
    const flap = [100, 101, 100, 101, 100];
    const ids = (i: number): SubsetIdentity => ({ kind: 'id', id: i });
    const ranks = (i: number): SubsetIdentity => ({ kind: 'rank', rank: i, members: M });
    const before = walk(flap, M, ids, 'step');
    const afterIds = walk(flap, M, ids, 'taper');
    const afterRanks = walk(flap, M, ranks, 'taper');
    console.log(
      `auto flap 100->101->100->101->100, ${M} clients, connections opened + closed per step: step rule ${before.perStep.slice(1).join('/')} (each client ${before.worstClient.slice(1).join('/')}); taper, ids ${afterIds.perStep.slice(1).join('/')} (each client at most ${Math.max(...afterIds.worstClient)}); taper, ranks ${afterRanks.perStep.slice(1).join('/')} (at most ${Math.max(...afterRanks.worstClient)})`,
    );
    // 80 or more of a client's connections each way.
    for (const w of before.worstClient.slice(1)) expect(w).toBeGreaterThanOrEqual(80);
    for (const w of [afterIds, afterRanks]) {
      // One key in, two dropped (99 of 101); then the two back and the key gone: at most 3 each way.
      expect(Math.max(...w.worstClient)).toBeLessThanOrEqual(3);
      expect(Math.max(...w.perStep.slice(1))).toBeLessThanOrEqual(3 * M);
    }
  });

  it('sweep 100 -> 200 -> 100 one key at a time: ranks open + close at most 5 connections per step throughout; ids as much only where ceil(S/20) re-deals the SRE subsets', () => {
    const M = 50;
    const up = Array.from({ length: 101 }, (_, i) => 100 + i);
    const sweep = [...up, ...up.slice(0, -1).reverse()];
    const ids = walk(sweep, M, (i) => ({ kind: 'id', id: i }), 'taper');
    const ranks = walk(sweep, M, (i) => ({ kind: 'rank', rank: i, members: M }), 'taper');
    const worstAt = (w: number[]) => sweep.slice(1).map((s, i) => [sweep[i], s, w[i + 1]] as const).filter(([, , m]) => m > 3);
    const show = (w: number[]) => worstAt(w).filter(([, , m]) => m > 5).map(([a, b, m]) => `${a}->${b}: ${m}`).join(', ') || 'none';
    console.log(`auto sweep, most one client moves per one-key step: ranks ${Math.max(...ranks.worstClient)} (steps over 5: ${show(ranks.worstClient)}); ids ${Math.max(...ids.worstClient)} (steps over 5: ${show(ids.worstClient)})`);
    // The key in, two dropped as the size shrinks, the window moved by one: 1 + 2 + 2.
    expect(Math.max(...ranks.worstClient)).toBeLessThanOrEqual(5);
    // Ids: the same, except at the SRE re-deals (121, 141, 161, 181, 201), as `--subset 20` always had.
    expect(worstAt(ids.worstClient).filter(([a, b, m]) => m > 5 && ![120, 140, 160, 180, 200].includes(Math.min(a, b)))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// Real resolvers on one etcd.

type Endpoint = grpc.experimental.Endpoint;
interface Client {
  resolver: EtcdResolver;
  name: string;
  held: string[];
  deliveries: number;
  /** Every delivery: its size and when (performance.now()). */
  log: { size: number; at: number }[];
}

const addrOf = (e: Endpoint) => {
  const a = e.addresses[0] as { host: string; port: number };
  return `${a.host}:${a.port}`;
};
let serial = 0;

function openClient(etcd: Etcd3, path: string, options: Record<string, unknown>): Client {
  const name = `subset-members-${serial++}`;
  registerEtcdResolver(etcd, name);
  const c: Client = { resolver: undefined as unknown as EtcdResolver, name, held: [], deliveries: 0, log: [] };
  c.resolver = new EtcdResolver(
    { scheme: 'etcd', authority: '', path },
    (res) => {
      if (res.ok) {
        c.held = res.value.map(addrOf).sort();
        c.deliveries++;
        c.log.push({ size: c.held.length, at: performance.now() });
      }
      return true;
    },
    { [ETCD_CLIENT_OPTION]: name, ...options } as grpc.ChannelOptions,
  );
  c.resolver.updateResolution();
  return c;
}

function closeClient(c: Client): void {
  c.resolver.destroy();
  unregisterEtcdClient(c.name);
}

/** The membership key of a client's resolver (private: read for the test only). */
const memberKeyOf = (c: Client): string | undefined => (c.resolver as unknown as { subset?: { members?: { key: string } } }).subset?.members?.key;

/** Member keys in rank order (create revision), as etcd has them. */
async function membersInEtcd(etcd: Etcd3, registry: string): Promise<string[]> {
  const res = await etcd.kv.range({ key: Buffer.from(membersPrefix(registry)), range_end: Buffer.from(membersPrefix(registry).slice(0, -1) + '0') });
  return res.kvs.sort((a, b) => Number(BigInt(a.create_revision) - BigInt(b.create_revision))).map((kv) => kv.key.toString());
}

/** Wait until every client holds the aperture window of its rank among the keys in etcd; returns the ranks. */
async function converged(etcd: Etcd3, registry: string, clients: Client[], backends: string[], size: number, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    `${clients.length} clients on their ranks`,
    async () => {
      const keys = await membersInEtcd(etcd, registry);
      if (keys.length !== clients.length) return undefined;
      return clients.every((c) => {
        const rank = keys.indexOf(memberKeyOf(c) ?? '');
        return rank >= 0 && c.held.join() === apertureSubset(backends, rank, keys.length, size).join();
      });
    },
    timeoutMs,
    50,
  );
}

async function putRegistry(etcd: Etcd3, registry: string, backends: string[]): Promise<void> {
  await Promise.all(backends.map((b) => etcd.put(`${registry}${b}`).value(encodeEndpoint(b))));
}

describe('membership ranks: real resolvers on one etcd', () => {
  const open: Client[] = [];
  const t = useTestEtcd(1, () => {
    for (const c of open.splice(0)) closeClient(c);
  });

  it('10 clients with --subset 3 over 10 servers: 3 connections each (hashed ids: 1..6); a join and a leave move at most one connection per client; the key goes at once', async () => {
    const registry = 'ten/greeter/';
    const backends = servers(10);
    await putRegistry(t.client!, registry, backends);
    const clients = Array.from({ length: 10 }, () => openClient(t.client!, 'ten/greeter', { [SUBSET_SIZE_OPTION]: 3 }));
    open.push(...clients);
    const t0 = performance.now();
    await converged(t.client!, registry, clients, backends, 3);
    const settleMs = Math.round(performance.now() - t0);
    const per = count(clients.map((c) => c.held), backends);
    expect(Math.min(...per)).toBeGreaterThanOrEqual(2);
    expect(Math.max(...per)).toBeLessThanOrEqual(4);
    // Nothing in the registry prefix but the servers; the member keys are apart from it.
    expect((await t.client!.getAll().prefix(registry).keys()).sort()).toEqual(backends.map((b) => `${registry}${b}`).sort());
    expect((await t.client!.getAll().prefix(`${MEMBERS_ROOT}/`).keys()).every((k) => k.startsWith(membersPrefix(registry)))).toBe(true);

    // A client joins: count the connections the 10 others open.
    const snap = () => new Map(clients.map((c) => [c, c.held]));
    const before = snap();
    const joiner = openClient(t.client!, 'ten/greeter', { [SUBSET_SIZE_OPTION]: 3 });
    open.push(joiner);
    clients.push(joiner);
    await converged(t.client!, registry, clients, backends, 3);
    const joinMoves = [...before].map(([c, held]) => opened(held, c.held));
    // A client in the middle leaves: its key goes with the revoke, not a TTL later.
    const mid = snap();
    const leaver = clients.splice(4, 1)[0];
    const leaverKey = memberKeyOf(leaver)!;
    const tLeave = performance.now();
    closeClient(leaver);
    await waitFor('the member key revoked', async () => !(await membersInEtcd(t.client!, registry)).includes(leaverKey), 2_000, 10);
    const goneMs = Math.round(performance.now() - tLeave);
    await converged(t.client!, registry, clients, backends, 3);
    const leaveMoves = clients.map((c) => opened(mid.get(c)!, c.held));
    const perAfter = count(clients.map((c) => c.held), backends);
    console.log(
      `10 resolvers --subset 3 over 10 (real etcd): per server ${range(per)} (settled in ${settleMs} ms); an 11th joins: ${joinMoves.reduce((a, b) => a + b, 0)} connections moved among the 10 (most of one ${Math.max(...joinMoves)}); one leaves: key gone in ${goneMs} ms, ${leaveMoves.reduce((a, b) => a + b, 0)} moved among the other 10 (most of one ${Math.max(...leaveMoves)}), per server then ${range(perAfter)}`,
    );
    expect(Math.max(...joinMoves)).toBeLessThanOrEqual(1);
    expect(Math.max(...leaveMoves)).toBeLessThanOrEqual(1);
    expect(joinMoves.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(10);
    expect(leaveMoves.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(10);
    expect(Math.max(...perAfter) - Math.min(...perAfter)).toBeLessThanOrEqual(1);
    for (const c of clients.splice(0)) closeClient(c);
    await waitFor('every member key revoked', async () => (await membersInEtcd(t.client!, registry)).length === 0, 3_000);
  }, 60_000);

  it('100 clients with N=10 over 50 servers: every server 20 (0.8x-1.2x asked; hashed ids 13..28); a join and a leave move under 50 of 1,000', async () => {
    const registry = 'hundred/greeter/';
    const backends = servers(50);
    await putRegistry(t.client!, registry, backends);
    const t0 = performance.now();
    const clients = Array.from({ length: 100 }, () => openClient(t.client!, 'hundred/greeter', { [SUBSET_SIZE_OPTION]: 10, [SUBSET_OVERLAP_OPTION]: 0 }));
    open.push(...clients);
    await converged(t.client!, registry, clients, backends, 10, 30_000);
    const settleMs = Math.round(performance.now() - t0);
    const deliveries = clients.reduce((a, c) => a + c.deliveries, 0);
    const per = count(clients.map((c) => c.held), backends);
    expect(Math.min(...per)).toBeGreaterThanOrEqual(0.8 * 20);
    expect(Math.max(...per)).toBeLessThanOrEqual(1.2 * 20);

    const before = new Map(clients.map((c) => [c, c.held]));
    const joiner = openClient(t.client!, 'hundred/greeter', { [SUBSET_SIZE_OPTION]: 10, [SUBSET_OVERLAP_OPTION]: 0 });
    open.push(joiner);
    await converged(t.client!, registry, [...clients, joiner], backends, 10);
    const joinMoves = [...before].map(([c, held]) => opened(held, c.held));
    const mid = new Map(clients.map((c) => [c, c.held]));
    const leaver = clients[37];
    closeClient(leaver);
    const stay = [...clients.filter((c) => c !== leaver), joiner];
    await converged(t.client!, registry, stay, backends, 10);
    const leaveMoves = clients.filter((c) => c !== leaver).map((c) => opened(mid.get(c)!, c.held));
    const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
    console.log(
      `100 resolvers N=10 over 50 (real etcd, one process): per server ${range(per)}, settled ${settleMs} ms after they opened (${deliveries} deliveries in all while 100 ranks came in); a 101st joins: ${sum(joinMoves)} moved (most of one ${Math.max(...joinMoves)}); client 37 of the first 100 leaves: ${sum(leaveMoves)} moved (most of one ${Math.max(...leaveMoves)})`,
    );
    expect(Math.max(...joinMoves)).toBeLessThanOrEqual(1);
    expect(Math.max(...leaveMoves)).toBeLessThanOrEqual(1);
    expect(sum(joinMoves)).toBeLessThan(50);
    expect(sum(leaveMoves)).toBeLessThan(50);
    for (const c of stay) closeClient(c);
    open.splice(0);
    await waitFor('every member key revoked', async () => (await membersInEtcd(t.client!, registry)).length === 0, 5_000);
  }, 90_000);

  it('--client-id N and --client-id hash write no member key and pick the SRE subsets as before', async () => {
    const registry = 'ids/greeter/';
    const backends = servers(10);
    await putRegistry(t.client!, registry, backends);
    const given = openClient(t.client!, 'ids/greeter', { [SUBSET_SIZE_OPTION]: 3, [CLIENT_ID_OPTION]: 7 });
    const hashed = openClient(t.client!, 'ids/greeter', { [SUBSET_SIZE_OPTION]: 3, [CLIENT_ID_OPTION]: 'hash' });
    open.push(given, hashed);
    await waitFor('both delivered', () => given.held.length === 3 && hashed.held.length === 3);
    expect(given.held).toEqual(subsetFor(backends, 7, 3));
    expect(hashed.held).toEqual(subsetFor(backends, defaultClientId(), 3));
    // Give a membership the time it would take to appear.
    await new Promise((r) => setTimeout(r, 300));
    expect(await t.client!.getAll().prefix(membersPrefix(registry)).count()).toBe(0);
    closeClient(given);
    closeClient(hashed);
    open.splice(0);
  });

  it('auto below 100 backends writes nothing; above, it joins, and the backends the taper drops stay for the overlap', async () => {
    const registry = 'autojoin/greeter/';
    const all = servers(120);
    await putRegistry(t.client!, registry, all.slice(0, 100));
    const c = openClient(t.client!, 'autojoin/greeter', {});
    open.push(c);
    await waitFor('100 delivered', () => c.held.length === 100);
    await new Promise((r) => setTimeout(r, 300));
    expect(await t.client!.getAll().prefix(membersPrefix(registry)).count()).toBe(0);
    const seen = c.log.length;
    const t0 = performance.now();
    await putRegistry(t.client!, registry, all.slice(100, 101));
    await waitFor('the 101-backend subset', () => c.held.length === autoSubsetSize(101), 5_000);
    expect(await membersInEtcd(t.client!, registry)).toEqual([memberKeyOf(c)]);
    expect(c.held).toEqual(apertureSubset(all.slice(0, 101), 0, 1, 99));
    // Make before break: the backends dropped stayed handed over beside the
    // new one, and went SUBSET_OVERLAP_MS later. (Normally two deliveries,
    // 101 then 99: the rank is there before the first; on a slow etcd the
    // first goes out on the hashed id, then the rank's, each overlapping.)
    const after = c.log.slice(seen);
    console.log(`auto, 100 -> 101 backends: deliveries ${after.map((d) => `${d.size} at +${Math.round(d.at - t0)} ms`).join(', ')}`);
    expect(after[0].size).toBeGreaterThan(99);
    expect(after[after.length - 1].size).toBe(99);
    expect(after[after.length - 1].at - after[0].at).toBeGreaterThanOrEqual(SUBSET_OVERLAP_MS - 50);
    closeClient(c);
    open.splice(0);
    await subsetMembersClosed();
    expect(await t.client!.getAll().prefix(membersPrefix(registry)).count()).toBe(0);
  });
});

describe('membership refused: the hashed id, one warning', () => {
  let etcd: EtcdCluster | undefined;
  let root: Etcd3 | undefined;
  let reader: Etcd3 | undefined;
  beforeAll(async () => {
    etcd = await EtcdCluster.start(1);
    const ctl = (...args: string[]) => etcd!.etcdctl(args);
    await ctl('user', 'add', 'root:root-pw');
    await ctl('user', 'grant-role', 'root', 'root');
    await ctl('role', 'add', 'greeter-reader');
    await ctl('role', 'grant-permission', 'greeter-reader', '--prefix=true', 'read', 'perm/greeter/');
    await ctl('user', 'add', 'reader:reader-pw');
    await ctl('user', 'grant-role', 'reader', 'greeter-reader');
    await ctl('auth', 'enable');
    root = createEtcdClient({ endpoints: etcd.endpoints.split(','), user: 'root:root-pw' });
    reader = createEtcdClient({ endpoints: etcd.endpoints.split(','), user: 'reader:reader-pw' });
  }, 60_000);
  afterAll(async () => {
    reader?.close();
    root?.close();
    await etcd?.stop();
  });

  it('a read-only role: both resolvers fall back to subsetFor(hashed id), the process warns once with the reason, no key is left', async () => {
    const backends = servers(10);
    await putRegistry(root!, 'perm/greeter/', backends);
    const lines: { level: string; fields: Record<string, unknown>; msg?: string }[] = [];
    const sink = (level: string) => (fields: object, msg?: string) => void lines.push({ level, fields: fields as Record<string, unknown>, msg });
    setMeshLogger({ error: sink('error'), warn: sink('warn'), info: sink('info'), debug: sink('debug') }, { level: 'debug' });
    const clients = [0, 1].map(() => openClient(reader!, 'perm/greeter', { [SUBSET_SIZE_OPTION]: 3 }));
    try {
      await waitFor('both delivered after the refusal', () => clients.every((c) => c.held.length === 3) && lines.filter((l) => l.fields.event === 'resolver.subset_members_refused').length === 2, 10_000);
      const refused = lines.filter((l) => l.fields.event === 'resolver.subset_members_refused');
      expect(refused.map((l) => l.level).sort()).toEqual(['debug', 'warn']);
      const warn = refused.find((l) => l.level === 'warn')!;
      console.log(`refused: ${warn.msg}`);
      expect(warn.msg).toMatch(/permission denied/i);
      expect(warn.fields.prefix).toBe(membersPrefix('perm/greeter/'));
      for (const c of clients) expect(c.held).toEqual(subsetFor(backends, defaultClientId(), 3));
      expect(await root!.getAll().prefix(`${MEMBERS_ROOT}/`).count()).toBe(0);
    } finally {
      for (const c of clients) closeClient(c);
      setMeshLogger({ error: () => undefined, warn: () => undefined, info: () => undefined });
    }
  }, 30_000);
});

describe('real `mesh load` processes', () => {
  const greeters: GreeterServer[] = [];
  const t = useTestEtcd(1, () => Promise.all(greeters.map((g) => g.shutdown('test file over'))));

  it('3 `mesh load --subset 1` over 3 servers: one client on each server; their keys gone as they exit', async () => {
    const servers3 = Array.from({ length: 3 }, () => new GreeterServer({ host: '127.0.0.1', port: 0, etcd: t.client, prefix: 'rl', service: 'greeter', ttlSeconds: 10 }));
    greeters.push(...servers3);
    await Promise.all(servers3.map((s) => s.start()));
    await waitFor('3 registrations', async () => ((await t.client!.getAll().prefix('rl/').keys()).length === 3 ? true : undefined));
    const args = ['load', '--subset', '1', '--json', '--concurrency', '2', '--duration', '5s', '--prefix', 'rl', '--etcd', t.etcd!.endpoints];
    const loads = [0, 1, 2].map(() => new MeshProcess(args));
    await waitFor('3 members', async () => ((await t.client!.getAll().prefix(membersPrefix('rl/greeter/')).count()) === 3 ? true : undefined), 15_000);
    // What each holds now, all three running: its subset changes, replayed.
    const heldOf = (l: MeshProcess) => {
      const held = new Set<string>();
      for (const ch of l.logsNamed('resolver.subset_change')) {
        for (const r of ch.removed as string[]) held.delete(r);
        for (const a of ch.added as string[]) held.add(a);
      }
      return [...held];
    };
    const finals = await waitFor('one client on each server', () => {
      const f = loads.map(heldOf);
      return f.every((x) => x.length === 1) && new Set(f.flat()).size === 3 ? f : undefined;
    }, 5_000);
    const codes = await Promise.all(loads.map((l) => l.exitWithin(30_000)));
    expect(codes).toEqual([0, 0, 0]);
    const summaries = loads.map((l) => JSON.parse(l.stdout[l.stdout.length - 1]) as { failed: number; ok: number });
    console.log(`3 mesh load --subset 1 over 3: final subsets ${finals.map((f) => f.join(',')).join(' | ')}; ok ${summaries.map((s) => s.ok).join('/')}, failed ${summaries.map((s) => s.failed).join('/')}`);
    expect(summaries.every((s) => s.failed === 0)).toBe(true);
    // Each revoked its member key on the way out.
    expect(await t.client!.getAll().prefix(`${MEMBERS_ROOT}/`).count()).toBe(0);
  }, 60_000);
});
