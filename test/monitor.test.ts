import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { EtcdCluster } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { encodeEndpoint } from '../balancer/endpoint-codec';
import type { ClusterView } from '../coordination/monitor';

let etcd: EtcdCluster;
const children: ChildProcess[] = [];

beforeAll(async () => {
  etcd = await EtcdCluster.start(1);
});

afterAll(async () => {
  await MeshProcess.killAll();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await etcd?.stop();
});

/** A long-running etcdctl (elect / lock) whose stdout lines we collect. */
function etcdctlLong(args: string[]): { proc: ChildProcess; out: string[] } {
  const proc = spawn('etcdctl', [`--endpoints=${etcd.endpoints}`, ...args], { env: { ...process.env, ETCDCTL_API: '3' }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  const out: string[] = [];
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => out.push(...d.split('\n').filter((l) => l !== '')));
  return { proc, out };
}

async function grant(ttl: number): Promise<string> {
  const { stdout } = await etcd.etcdctl(['lease', 'grant', String(ttl)]);
  return /lease ([0-9a-f]+) granted/.exec(stdout)![1];
}

async function register(prefix: string, service: string, addr: string, metadata: unknown, lease: string): Promise<void> {
  await etcd.etcdctl(['put', `--lease=${lease}`, `${prefix}/${service}/${addr}`, encodeEndpoint(addr, metadata)]);
}


describe('lease ids', () => {
  it('are shown as etcdctl prints them: 16 hex digits, zero-padded (Go keys stay unpadded)', async () => {
    const { leaseIdHex } = await import('../coordination/monitor-leases');
    const { isCampaignKey } = await import('../coordination/monitor-elections');
    expect(leaseIdHex('1')).toBe('0000000000000001');
    expect(leaseIdHex('816455617380991494')).toBe('0b54a20ee8ddc206');
    expect(isCampaignKey('jobs/b54a20ee8ddc206', '816455617380991494')).toBe(true);
  });
});

describe('mesh ls / mesh top', () => {
  let leaseA: string;
  let leaseB: string;
  let leader: { proc: ChildProcess; out: string[] };
  let follower: { proc: ChildProcess; out: string[] };

  beforeAll(async () => {
    [leaseA, leaseB] = [await grant(30), await grant(60)];
    await register('services', 'greeter', '127.0.0.1:50051', { zone: 'a', weight: 2 }, leaseA);
    await register('services', 'greeter', '127.0.0.1:50052', null, leaseB); // as Go's endpoints.Manager writes it
    await register('services', 'billing', '10.0.0.7:9000', { version: '1.2' }, leaseA);
    await etcd.etcdctl(['put', 'services/greeter/garbage', 'not json']);
    leader = etcdctlLong(['elect', 'jobs-leader', 'node-a']);
    await waitFor('node-a elected', () => leader.out.includes('node-a'), 15_000);
    follower = etcdctlLong(['elect', 'jobs-leader', 'node-b']);
    const lock = etcdctlLong(['lock', 'nightly']);
    await waitFor('lock held', () => lock.out.length > 0, 15_000);
    // The follower is campaigning once its key exists (2 keys under jobs-leader/).
    await waitFor('follower campaigning', async () => (await etcd.etcdctl(['get', '--prefix', 'jobs-leader/', '--keys-only'])).stdout.split('\n').filter(Boolean).length === 2, 15_000);
  });

  it('ls --json: services, endpoints with metadata and TTL, the election leader and lock holder', async () => {
    const res = await runMesh(['ls', '--json', '--etcd', etcd.endpoints]);
    expect(res.code).toBe(0);
    const view = JSON.parse(res.stdout[0]) as ClusterView;
    expect(view.services.map((s) => s.name)).toEqual(['billing', 'greeter']);
    const greeter = view.services.find((s) => s.name === 'greeter')!;
    expect(greeter.endpoints.map((e) => [e.addr, e.metadata, e.lease])).toEqual([
      ['127.0.0.1:50051', { zone: 'a', weight: 2 }, leaseA],
      ['127.0.0.1:50052', null, leaseB],
    ]);
    expect(greeter.endpoints[0].ttl).toBeGreaterThan(20);
    expect(greeter.endpoints[0].ttl).toBeLessThanOrEqual(30);
    expect(greeter.endpoints[1].ttl).toBeGreaterThan(50);
    expect(view.invalid).toEqual([{ key: 'services/greeter/garbage', reason: 'value is not JSON' }]);
    expect(view.elections).toHaveLength(1);
    expect(view.elections[0]).toMatchObject({ name: 'jobs-leader', candidates: 2, leader: { value: 'node-a', key: expect.stringMatching(/^jobs-leader\/[0-9a-f]+$/) } });
    expect(view.elections[0].leader.ttl).toBeGreaterThan(0);
    expect(view.elections[0].leader.key).toBe(leader.out[0]);
    expect(view.locks).toEqual([expect.objectContaining({ name: 'nightly', waiters: 0 })]);
    // The bad record is reported on stderr with its key, not fatal.
    expect(res.logs.find((l) => l.event === 'monitor.bad_record')).toMatchObject({ key: 'services/greeter/garbage' });
  });

  it('ls --service narrows; the plain output is a table', async () => {
    const res = await runMesh(['ls', '--service', 'billing', '--etcd', etcd.endpoints]);
    expect(res.code).toBe(0);
    expect(res.stdout[0]).toMatch(/^SERVICE\s+ENDPOINT\s+TTL\s+LEASE\s+METADATA$/);
    expect(res.stdout[1]).toMatch(new RegExp(`^billing\\s+10\\.0\\.0\\.7:9000\\s+\\d+s\\s+${leaseA}\\s+\\{"version":"1.2"\\}$`));
    expect(res.stdout.some((l) => /^jobs-leader\s+node-a\s+\d+s\s+2\s+jobs-leader\//.test(l))).toBe(true);
    expect(res.stdout.join('\n')).not.toMatch(/greeter/);
  });

  it('top (not a TTY): the initial state, then one line per change; --json; ends on SIGTERM with 0', async () => {
    const top = new MeshProcess(['top', '--etcd', etcd.endpoints]);
    await waitFor('initial state', () => top.stdout.some((l) => / \+ election jobs-leader leader="node-a"/.test(l)), 15_000);
    expect(top.stdout.some((l) => l.endsWith('+ endpoint greeter 127.0.0.1:50051 lease=' + leaseA + ' metadata={"zone":"a","weight":2}'))).toBe(true);
    const initial = top.stdout.length;

    await register('services', 'greeter', '127.0.0.1:50053', { zone: 'b' }, leaseB);
    await waitFor('new endpoint line', () => top.stdout.some((l) => / \+ endpoint greeter 127\.0\.0\.1:50053 /.test(l)), 15_000);
    await etcd.etcdctl(['del', 'services/billing/10.0.0.7:9000']);
    await waitFor('removal line', () => top.stdout.some((l) => / - endpoint billing 10\.0\.0\.7:9000$/.test(l)), 15_000);
    // The leader resigns (etcdctl revokes its session on SIGTERM): node-b leads.
    leader.proc.kill('SIGTERM');
    await waitFor('leader change line', () => top.stdout.some((l) => / ~ election jobs-leader leader="node-b" .* candidates=1$/.test(l)), 15_000);
    // Nothing else changed, so nothing else was printed (TTLs counting down are not changes).
    expect(top.stdout.slice(initial)).toHaveLength(3);
    for (const l of top.stdout) expect(l).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z [+~-] (endpoint|election|lock) /);
    top.kill('SIGTERM');
    expect(await top.exitWithin()).toBe(0);

    const json = new MeshProcess(['top', '--json', '--duration', '1s', '--etcd', etcd.endpoints]);
    expect(await json.exitWithin()).toBe(0);
    const view = JSON.parse(json.stdout[0]) as ClusterView;
    expect(view.elections[0].leader.value).toBe('node-b');
    expect(follower.out).toContain('node-b');
  });

  it('usage errors: one stderr line, exit 2', async () => {
    for (const args of [['ls', '--service', ''], ['ls', '--prefix', ''], ['ls', 'extra'], ['top', '--duration', 'abc'], ['top', '--duration', '0'], ['top', '--bogus']]) {
      const res = await runMesh([...args, '--etcd', etcd.endpoints]);
      expect({ args, code: res.code }).toEqual({ args, code: 2 });
      expect(res.stderr.filter((l) => l.trim() !== '')).toHaveLength(1);
    }
    for (const args of [['ls', '--help'], ['top', '--help']]) expect((await runMesh(args)).code).toBe(0);
  });
});

describe('ls / top with crafted key names (terminal escapes)', () => {
  // C0 (ESC, BEL, CR), DEL and C1 (U+009B is CSI on UTF-8 terminals); none may reach the terminal raw.
  const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/;
  const evilService = 'ev\x1b[2Jil';
  const evilAddr = '127.0.0.1:1';
  let electionKey: string;

  beforeAll(async () => {
    const lease = await grant(60);
    await register('evil', evilService, evilAddr, { zone: 'z\u009b31m' }, lease);
    await etcd.etcdctl(['put', 'evil/greeter/\x7f\r\x1b]0;pwned\x07', 'not json']);
    // Go writes the lease id unpadded (%x), etcdctl prints it padded.
    electionKey = `evil-el/x\x1b[2J/${lease.replace(/^0+/, '')}`;
    await etcd.etcdctl(['put', `--lease=${lease}`, electionKey, 'leader\x1b[2J\u0085']);
  });

  it('ls prints every key and value with control characters escaped (JSON-quoted); --json round-trips them', async () => {
    const flags = ['--prefix', 'evil', '--election-prefix', 'evil-el/', '--etcd', etcd.endpoints];
    const res = await runMesh(['ls', ...flags]);
    expect(res.code).toBe(0);
    const out = res.stdout.join('\n');
    expect(out).not.toMatch(CONTROL);
    expect(out).toContain(JSON.stringify(evilService));
    expect(out).toContain('"ev\\u001b[2Jil"');
    expect(out).toContain('"leader\\u001b[2J\\u0085"');
    expect(out).toContain('"evil/greeter/\\u007f\\r\\u001b]0;pwned\\u0007"');
    const json = await runMesh(['ls', '--json', ...flags]);
    expect(json.stdout.join('\n')).not.toMatch(CONTROL);
    const view = JSON.parse(json.stdout[0]) as ClusterView;
    expect(view.services.map((s) => s.name)).toEqual([evilService]);
    expect(view.services[0].endpoints[0].addr).toBe(evilAddr);
    expect(view.elections[0].leader.key).toBe(electionKey);

    const top = new MeshProcess(['top', ...flags]);
    await waitFor('top lines', () => top.stdout.some((l) => l.includes('+ election')) && top.stdout.some((l) => l.includes('+ endpoint')), 15_000);
    top.kill('SIGTERM');
    expect(await top.exitWithin()).toBe(0);
    expect(top.stdout.join('\n')).not.toMatch(CONTROL);
    expect(top.stdout.join('\n')).toContain('+ endpoint "ev\\u001b[2Jil" 127.0.0.1:1 ');
  });
});
