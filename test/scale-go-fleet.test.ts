import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { buildGoPeers, ensureGoToolchain, type GoPeers } from './harness/peer-go';
import { benchHerd } from '../bench/scale-herd';
import { benchWide } from '../bench/scale-wide';
import { needTool } from './harness/need-tool';
import type { PeerAvailability } from './harness/peer-debian';

/**
 * The Go side of the scale bench's "ours vs Go" table, at test size: the Go
 * fleet (test/peers/go/fleet: clientv3 leases, naming/endpoints Manager, our
 * re-grant policy; etcd's naming/resolver with a recording ClientConn) goes
 * through the same herd as ours (test/scale-herd.test.ts), and the grpc-go
 * client (test/peers/go/wide-client) calls through etcd's resolver. What is
 * asserted is that the Go side measures what ours does (everything back,
 * every resolver right, its CPU and etcd's rate reported), not how fast.
 */
describe('scale: the Go fleet and client of the ours-vs-Go bench', () => {
  let t: Partial<TestEtcd> = {};
  let peers: GoPeers | undefined;
  let go: PeerAvailability = { ok: false, reason: 'set-up did not run' };
  beforeAll(async () => {
    go = await ensureGoToolchain();
    if (!go.ok) return;
    peers = await buildGoPeers();
    t = await startTestEtcd(3);
  }, 600_000);
  afterAll(() => stopTestEtcd(t), 30_000);

  it('100 Go registrations, 50 Go resolvers, etcd stopped 3x TTL: all back, every resolver right, CPU and etcd rates reported', async (ctx) => {
    needTool(ctx, go, 'golang-go golang-etcd-server-dev golang-google-grpc-dev');
    const lines: string[] = [];
    const r = await benchHerd(
      { cluster: t.etcd!, client: t.client!, prefix: 'goherd', service: 'greeter', registrations: 100, resolvers: 50, registrarProcesses: 2, resolverProcesses: 2, resolversPerClient: 10, registrationsPerClient: 50, ttl: 2, outageTtls: 3, go: { binary: peers!.fleet } },
      (s) => lines.push(s),
    );
    console.log(lines.join('\n'));
    expect(r.fleet).toBe('go');
    expect(r.losses).toBeGreaterThanOrEqual(100);
    expect(r.keysAfter).toBe(100);
    expect(r.settled).toBe(true);
    expect(r.resolversCorrect).toBe(50);
    expect(r.wrongAddresses).toBe(0);
    // Go's resolver hands over a set per watch response (no coalescing).
    expect(r.deliveriesPerResolver).toBeGreaterThan(1);
    expect(r.recoveryCpuS.registrars).toBeGreaterThan(0);
    expect(r.recoveryCpuS.resolvers).toBeGreaterThan(0);
    expect(r.steadyCpuUsPerRegPerS).toBeGreaterThan(0);
    expect(r.steadyPerS).toBeGreaterThan(0);
    expect(r.peakPerS).toBeGreaterThan(0);
  }, 90_000);

  it('the grpc-go client calls 3 and 30 backends through etcd\'s resolver with round_robin, every backend used, 0 failed', async (ctx) => {
    needTool(ctx, go, 'golang-go golang-etcd-server-dev golang-google-grpc-dev');
    const lines: string[] = [];
    const r = await benchWide(
      { endpoints: t.etcd!.endpoints.split(','), prefix: 'gowide', wide: 30, narrow: 3, concurrency: 4, warmMs: 300, durationMs: 1_000, idleMs: 300, rounds: 1, goClient: peers!.wideClient },
      (s) => lines.push(s),
    );
    console.log(lines.join('\n'));
    expect(r.go).toBeDefined();
    expect(r.go!.narrow.failed + r.go!.wide.failed).toBe(0);
    expect(Math.min(...r.go!.narrow.rps, ...r.go!.wide.rps)).toBeGreaterThan(0);
    expect(r.go!.narrow.connections).toBe(3);
    expect(r.go!.wide.connections).toBe(30);
    expect(r.go!.ratio).toBeGreaterThan(0);
  }, 120_000);
});
