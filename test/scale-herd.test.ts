import { describe, expect, it } from 'vitest';
import { useTestEtcd } from './harness/etcd-cluster';
import { benchHerd } from '../bench/scale-herd';
import { LeaseRegistrationGroup } from '../balancer/registration-group';
import { decodeEndpoint, DecodeError } from '../balancer/endpoint-codec';

/**
 * Issue 14 item 2 at test size (the 1,000 / 500 figures are `npm run bench
 * -- --only scale`): 200 real registrations (each its own lease and
 * keepalive) in 2 processes and 100 real resolvers (each its own Get +
 * watch) in 2 more, on a 3-member etcd; every member SIGSTOPped for 3x the
 * TTL, then SIGCONTed. And the shared-lease group registration on its own.
 */
describe('scale: outage herd', () => {
  const t = useTestEtcd(3);

  // The targets are 3 s (re-registration) and 1 s (resolvers); on this
  // shared 2-core machine re-registration took 2-7 s (docs/scale.md says why),
  // so the bounds asserted here are what must never break: everything back,
  // no empty set ever, resolvers following the registry closely.
  it('200 registrations, 100 resolvers, etcd stopped 3x TTL: all back, no empty set, resolvers correct soon after', async () => {
    const lines: string[] = [];
    const r = await benchHerd(
      { cluster: t.etcd!, client: t.client!, prefix: 'herd', service: 'greeter', registrations: 200, resolvers: 100, registrarProcesses: 2, resolverProcesses: 2, resolversPerClient: 10, registrationsPerClient: 50, ttl: 2, outageTtls: 3 },
      (s) => lines.push(s),
    );
    console.log(lines.join('\n'));
    // Every lease was lost during the outage, so every key had to be granted and written again.
    expect(r.losses).toBeGreaterThanOrEqual(200);
    expect(r.keysAfter).toBe(200);
    expect(r.reregisteredMs).toBeLessThan(15_000);
    expect(r.resolversCorrect).toBe(100);
    expect(r.resolversAfterRegisteredMs).toBeLessThan(2_000);
    expect(r.emptySets).toBe(0);
    expect(r.wrongAddresses).toBe(0);
    expect(r.minSetAfterFull).toBeGreaterThan(0);
    expect(r.peakPerS).toBeGreaterThan(0);
  }, 75_000);

  it('LeaseRegistrationGroup: 300 keys under one lease; a revoked lease is granted again and every key rewritten; close() removes them', async () => {
    const client = t.client!;
    const members = Array.from({ length: 300 }, (_, i) => ({ addr: `10.9.${i >> 8}.${i & 255}:8080`, metadata: JSON.stringify({ weight: 1 + (i % 100) }) }));
    const g = new LeaseRegistrationGroup(client, { prefix: 'group', service: 'greeter', ttlSeconds: 5, members, regrantJitterMs: 200 });
    const states: string[] = [];
    g.on('state', (next) => states.push(next));
    try {
      await g.start();
      const kvs = await client.getAll().prefix('group/greeter/').exec();
      expect(kvs.kvs.length).toBe(300);
      expect(new Set(kvs.kvs.map((kv) => kv.lease)).size).toBe(1);
      expect(kvs.kvs[0].lease).toBe(g.leaseId);
      for (const kv of kvs.kvs) expect(decodeEndpoint(kv.key.toString(), kv.value)).not.toBeInstanceOf(DecodeError);

      // Revoked behind the group's back (etcdctl lease revoke): every key goes; the group notices on its next keepalive.
      const first = g.leaseId!;
      await client.leaseClient.leaseRevoke({ ID: first });
      const deadline = Date.now() + 10_000;
      for (;;) {
        const n = await client.getAll().prefix('group/greeter/').count();
        if (n === 300 && g.state === 'REGISTERED' && g.leaseId !== first) break;
        if (Date.now() > deadline) throw new Error(`not re-registered: ${n} keys, state ${g.state}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(states).toEqual(['GRANTING', 'REGISTERED', 'LOST', 'GRANTING', 'REGISTERED']);
    } finally {
      await g.close();
      await g.close();
    }
    expect(await client.getAll().prefix('group/greeter/').count()).toBe(0);
    expect(g.state).toBe('CLOSED');
  }, 20_000);
});
