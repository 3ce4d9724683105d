import { describe, expect, it } from 'vitest';
import { AUTO_SUBSET_ABOVE, AUTO_SUBSET_SIZE, CLIENT_ID_OPTION, defaultClientId, fnv1a32, nextSubset, subsetFor, SUBSET_SIZE_OPTION } from '../balancer/subset';
import { EtcdResolver } from '../balancer/resolver-etcd';
import { AUTO_SUBSET_FULL_AT } from '../balancer/subset-auto';
import { SUBSET_OVERLAP_OPTION } from '../balancer/subset-plan';
import { decodeEndpoint, encodeEndpoint, type EndpointRecord } from '../balancer/endpoint-codec';

/**
 * Deterministic subsetting (balancer/subset.ts), the math only: balance of
 * connections per backend and how many clients move when a backend is lost,
 * against the SRE book's shuffle and a plain hash-mod as baselines.
 */

const servers = (n: number) => Array.from({ length: n }, (_, i) => `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}:50051`);

function connectionsPerServer(backends: string[], clientIds: number[], size: number, pick = subsetFor): Map<string, number> {
  const per = new Map(backends.map((b) => [b, 0]));
  for (const id of clientIds) for (const b of pick(backends, id, size)) per.set(b, per.get(b)! + 1);
  return per;
}

/** Clients whose subset changed, and connections moved (backends dropped that were not the lost one). */
function churn(before: string[], after: string[], clientIds: number[], size: number, pick = subsetFor): { clients: number; connections: number } {
  const lost = new Set(before.filter((b) => !after.includes(b)));
  let clients = 0;
  let connections = 0;
  for (const id of clientIds) {
    const a = new Set(pick(before, id, size));
    const b = new Set(pick(after, id, size));
    const added = [...b].filter((x) => !a.has(x)).length;
    const needed = [...a].filter((x) => lost.has(x)).length;
    if (added > 0) clients++;
    connections += added - needed;
  }
  return { clients, connections };
}

/** Baseline 1: the SRE book's pseudo-code as written: shuffle the sorted list with the round as seed. */
function bookShuffle(backends: readonly string[], clientId: number, size: number): string[] {
  const list = [...new Set(backends)].sort();
  if (list.length <= size) return list;
  const count = Math.floor(list.length / size);
  let seed = Math.floor(clientId / count) + 1;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [list[i], list[j]] = [list[j], list[i]];
  }
  const start = (clientId % count) * size;
  return list.slice(start, start + size);
}

/** Baseline 2: plain hash-mod: backends whose hash mod subset-count equals the client's. */
function hashMod(backends: readonly string[], clientId: number, size: number): string[] {
  const list = [...new Set(backends)].sort();
  const count = Math.ceil(list.length / size);
  return list.filter((_, i) => i % count === clientId % count);
}

describe('deterministic subsetting', () => {
  it('100 clients over 50 servers, N=10: every server within 0.8x..1.2x of the mean', () => {
    const backends = servers(50);
    const ids = Array.from({ length: 100 }, (_, i) => i);
    const per = [...connectionsPerServer(backends, ids, 10).values()];
    const mean = (100 * 10) / 50;
    const [min, max] = [Math.min(...per), Math.max(...per)];
    console.log(`subset balance, dense ids 0..99: per-server connections min ${min} max ${max} mean ${mean}`);
    expect(per.reduce((a, b) => a + b, 0)).toBe(1000);
    expect(min).toBeGreaterThanOrEqual(0.8 * mean);
    expect(max).toBeLessThanOrEqual(1.2 * mean);
    // Every client got 10 distinct backends.
    for (const id of ids) expect(new Set(subsetFor(backends, id, 10)).size).toBe(10);
  });

  it('sizes that do not divide, and hashed (default-style) ids: figures reported, bounded', () => {
    const backends = servers(47);
    const dense = [...connectionsPerServer(backends, Array.from({ length: 100 }, (_, i) => i), 10).values()];
    const hashedIds = Array.from({ length: 100 }, (_, i) => defaultClientId(`host-${i}`, 1000 + i));
    const hashed = [...connectionsPerServer(servers(50), hashedIds, 10).values()];
    console.log(`subset balance: 47 servers dense ids min ${Math.min(...dense)} max ${Math.max(...dense)} mean ${(1000 / 47).toFixed(1)}; 50 servers hashed ids min ${Math.min(...hashed)} max ${Math.max(...hashed)} mean 20`);
    // A wrapped last slice puts at most one extra connection per round on a server.
    expect(Math.max(...dense) - Math.min(...dense)).toBeLessThanOrEqual(Math.ceil(100 / 5) + 1);
    expect(Math.min(...hashed)).toBeGreaterThan(0);
  });

  it('losing one server moves few clients: far fewer than the book shuffle or a hash-mod', () => {
    const before = servers(50);
    const ids = Array.from({ length: 100 }, (_, i) => i);
    const results: Record<string, { clients: number; connections: number }> = {};
    // Average over which server is lost: the position matters for a slice scheme.
    for (const [name, pick] of [['ours', subsetFor], ['book', bookShuffle], ['hashmod', hashMod]] as const) {
      let clients = 0;
      let connections = 0;
      for (let lost = 0; lost < before.length; lost++) {
        const c = churn(before, before.filter((_, i) => i !== lost), ids, 10, pick);
        clients += c.clients;
        connections += c.connections;
      }
      results[name] = { clients: clients / before.length, connections: connections / before.length };
    }
    console.log(`subset churn on losing 1 of 50 (mean over which): ${JSON.stringify(results)}`);
    // The 20 clients that used the lost server must move. Slices after the
    // lost one's position shift by one backend each: measured 60 clients and
    // 40 extra connections (of 1,000), against 777 (book) and 470 (hash-mod).
    expect(results.ours.clients).toBeLessThanOrEqual(65);
    expect(results.ours.connections).toBeLessThanOrEqual(50);
    expect(results.ours.connections).toBeLessThan(0.1 * results.book.connections);
    expect(results.ours.connections).toBeLessThan(0.15 * results.hashmod.connections);
  });

  it('what the resolver delivers (nextSubset, stateful): a loss moves only the clients that held it, even when ceil(S/N) changes', () => {
    const ids = Array.from({ length: 100 }, (_, i) => i);
    const report: string[] = [];
    for (const total of [50, 41]) {
      const before = servers(total);
      let worst = { clients: 0, connections: 0, max: 0, stateless: 0 };
      for (let lost = 0; lost < total; lost++) {
        const after = before.filter((_, i) => i !== lost);
        // Stateful rule vs the stateless ideal (what a freshly started client would pick).
        const stateful = (b: readonly string[], id: number, size: number) =>
          b.length === total ? subsetFor(b, id, size) : nextSubset(before, subsetFor(before, id, size), b, id, size);
        const c = churn(before, after, ids, 10, stateful);
        const users = ids.filter((id) => subsetFor(before, id, 10).includes(before[lost])).length;
        // Only the clients that held the lost server change, and nothing else moves.
        expect(c).toEqual({ clients: users, connections: 0 });
        const per = [...connectionsPerServer(after, ids, 10, stateful).values()];
        expect(per.reduce((x, y) => x + y, 0)).toBe(1000);
        const stateless = churn(before, after, ids, 10).connections;
        if (Math.max(...per) > worst.max || lost === 0) worst = { clients: users, connections: c.connections, max: Math.max(...per), stateless: Math.max(worst.stateless, stateless) };
        else worst.stateless = Math.max(worst.stateless, stateless);
      }
      report.push(`${total}->${total - 1}: clients moved = the ${worst.clients} holders, 0 extra connections (stateless ideal: up to ${worst.stateless} extra); busiest server afterwards ${worst.max} (mean ${(1000 / (total - 1)).toFixed(1)})`);
      // Replacements spread: the busiest server stays within 1.3x of the new mean.
      expect(worst.max).toBeLessThanOrEqual(1.3 * (1000 / (total - 1)));
    }
    console.log(`nextSubset on losing one server: ${report.join('; ')}`);
  });

  it('nextSubset: a join (or a flap back) restores the ideal subsets exactly', () => {
    const all = servers(50);
    const without = all.slice(1);
    for (const id of [0, 7, 99]) {
      const afterLoss = nextSubset(all, subsetFor(all, id, 10), without, id, 10);
      expect(nextSubset(without, afterLoss, all, id, 10)).toEqual(subsetFor(all, id, 10));
      expect(nextSubset(undefined, undefined, all, id, 10)).toEqual(subsetFor(all, id, 10));
    }
  });

  it('pure and order-independent; all backends when there are no more than N', () => {
    const b = servers(30);
    expect(subsetFor([...b].reverse(), 7, 5)).toEqual(subsetFor(b, 7, 5));
    expect(subsetFor(b.slice(0, 3), 7, 5)).toEqual(b.slice(0, 3).sort());
    expect(fnv1a32('a')).toBe(fnv1a32('a'));
    expect(() => subsetFor(b, -1, 5)).toThrow(RangeError);
    expect(() => subsetFor(b, 1, 0)).toThrow(RangeError);
  });
});

describe('the resolver\'s default subsetting (auto)', () => {
  /**
   * Feed a resolver registry snapshots directly (no etcd needed for this
   * part) and record the sizes it hands over. Without the make-before-break
   * overlap (subset-plan.ts; test/subset-members.test.ts tests it), which
   * hands over dropped backends for a while longer.
   */
  function resolverSizes(options: Record<string, unknown>, registrySizes: number[]): number[] {
    const sizes: number[] = [];
    const r = new EtcdResolver({ scheme: 'etcd', authority: '', path: 'auto/greeter' }, (res) => (res.ok && sizes.push(res.value.length), true), { [SUBSET_OVERLAP_OPTION]: 0, ...options });
    const addr = (i: number) => `10.9.${i >> 8}.${i & 255}:80`;
    for (const n of registrySizes) {
      const endpoints = Array.from({ length: n }, (_, i) => decodeEndpoint(`auto/greeter/${addr(i)}`, encodeEndpoint(addr(i))) as EndpointRecord);
      (r as unknown as { onUpdate(s: { endpoints: EndpointRecord[]; revision: string }): void }).onUpdate({ endpoints, revision: String(n) });
    }
    r.destroy();
    return sizes;
  }

  it(`every backend up to ${AUTO_SUBSET_ABOVE} registered, one fewer per backend beyond, ${AUTO_SUBSET_SIZE} from ${AUTO_SUBSET_FULL_AT}, every one again below; --subset 0 never subsets, --subset N always`, () => {
    expect(resolverSizes({}, [3, AUTO_SUBSET_ABOVE, AUTO_SUBSET_ABOVE + 1, 150, AUTO_SUBSET_FULL_AT, 1_000, AUTO_SUBSET_ABOVE])).toEqual([3, AUTO_SUBSET_ABOVE, AUTO_SUBSET_ABOVE - 1, 50, AUTO_SUBSET_SIZE, AUTO_SUBSET_SIZE, AUTO_SUBSET_ABOVE]);
    expect(resolverSizes({ [SUBSET_SIZE_OPTION]: 0 }, [3, 1_000])).toEqual([3, 1_000]);
    expect(resolverSizes({ [SUBSET_SIZE_OPTION]: 5 }, [3, 50, 1_000])).toEqual([3, 5, 5]);
  });

  it('auto picks the same subset as --subset 20 would for the same client id', () => {
    const picked: string[][] = [];
    for (const options of [{ [CLIENT_ID_OPTION]: 7 }, { [CLIENT_ID_OPTION]: 7, [SUBSET_SIZE_OPTION]: AUTO_SUBSET_SIZE }]) {
      const r = new EtcdResolver({ scheme: 'etcd', authority: '', path: 'auto/greeter' }, (res) => (res.ok && picked.push(res.value.map((e) => `${(e.addresses[0] as { host: string }).host}`).sort()), true), options);
      const endpoints = Array.from({ length: 500 }, (_, i) => decodeEndpoint(`auto/greeter/10.8.${i >> 8}.${i & 255}:80`, encodeEndpoint(`10.8.${i >> 8}.${i & 255}:80`)) as EndpointRecord);
      (r as unknown as { onUpdate(s: { endpoints: EndpointRecord[]; revision: string }): void }).onUpdate({ endpoints, revision: '1' });
      r.destroy();
    }
    expect(picked[0]).toHaveLength(AUTO_SUBSET_SIZE);
    expect(picked[0]).toEqual(picked[1]);
  });
});
