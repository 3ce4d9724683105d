import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { useTestEtcd } from './harness/etcd-cluster';
import { MESH_MAIN, MeshProcess, runMesh } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { subsetFor } from '../balancer/subset';
import { GreeterServer } from '../services/greeter-server';

/**
 * `mesh server --advertise` (the registered address, apart from the bind
 * address) and `--subset` end to end: usage errors; a server bound to
 * 0.0.0.0 registers what it advertises and is reached through it; a client
 * with --subset uses exactly its subset. Then hosts as network namespaces:
 * etcd, two servers and a client each in its own, on one bridge, and one
 * server cut off from the client while its etcd lease stays alive.
 */

const errorLines = (stderr: string[]) => stderr.filter((l) => l.trim() !== '' && !l.startsWith('{'));

describe('server --advertise and client --subset (loopback)', () => {
  const greeters: GreeterServer[] = [];
  // shutdown() is idempotent: the ones a test already stopped resolve at once.
  const t = useTestEtcd(1, () => Promise.all(greeters.map((g) => g.shutdown('test file over'))));

  it('usage errors: unspecified bind address without --advertise, bad --advertise, --subset misuse', async () => {
    const cases: [string[], RegExp][] = [
      [['server', '--port', '0', '--host', '0.0.0.0'], /--host 0\.0\.0\.0 listens on every interface.*--advertise/],
      [['server', '--port', '0', '--host', '::', '--no-register'], /--host :: listens on every interface.*--advertise/],
      [['server', '--port', '0', '--advertise', '[::]'], /unspecified address/],
      [['server', '--port', '0', '--advertise', '10.0.0.1:99999'], /port "99999" is not 1\.\.65535/],
      [['load', '--subset', '2', '--target', 'ipv4:127.0.0.1:1'], /does not apply to --target/],
      [['client', '--client-id', '3', '--subset', '0'], /only matters when subsetting/],
      [['client', '--client-id', '3', '--target', 'ipv4:127.0.0.1:1'], /does not apply to --target/],
    ];
    const results = await Promise.all(cases.map(([args]) => runMesh([...args, '--etcd', t.etcd!.endpoints], {}, 20_000)));
    results.forEach((r, i) => {
      const lines = errorLines(r.stderr);
      expect({ args: cases[i][0], code: r.code, lines: lines.length }).toEqual({ args: cases[i][0], code: 2, lines: 1 });
      expect(lines[0]).toMatch(cases[i][1]);
    });
  }, 60_000);

  it('a server on 0.0.0.0 with --advertise 127.0.0.1 registers and answers as 127.0.0.1:<bound port>', async () => {
    const server = new MeshProcess(['server', '--port', '0', '--host', '0.0.0.0', '--advertise', '127.0.0.1', '--prefix', 'adv', '--etcd', t.etcd!.endpoints]);
    await server.waitForLog('server.state', { to: 'SERVING' });
    const listening = await server.waitForLog('server.listening');
    expect(listening.bound).toMatch(/^0\.0\.0\.0:\d+$/);
    const port = String(listening.bound).split(':')[1];
    expect(listening.addr).toBe(`127.0.0.1:${port}`);
    const keys = await waitFor('registration', async () => {
      const k = await t.client!.getAll().prefix('adv/').keys();
      return k.length ? k : undefined;
    });
    expect(keys).toEqual([`adv/greeter/127.0.0.1:${port}`]);
    const client = await runMesh(['client', '--count', '1', '--prefix', 'adv', '--etcd', t.etcd!.endpoints], {}, 20_000);
    expect(client.code).toBe(0);
    expect(client.stdout).toEqual([`Hello world from 127.0.0.1:${port}`]);
    await server.stop();
  }, 30_000);

  it('--subset 2 over 4 servers: each client calls exactly its subset; losing a held server replaces only it, 0 failed calls', async () => {
    // In-process greeters (real gRPC servers, real leases) spare four process start-ups; the clients are real processes.
    const servers = Array.from({ length: 4 }, () => new GreeterServer({ host: '127.0.0.1', port: 0, etcd: t.client, prefix: 'sub', service: 'greeter', ttlSeconds: 10 }));
    greeters.push(...servers);
    await Promise.all(servers.map((s) => s.start()));
    const addrs = servers.map((s) => s.addr);
    await waitFor('4 registrations', async () => ((await t.client!.getAll().prefix('sub/').keys()).length === 4 ? true : undefined));
    const load = (id: number, more: string[]) => ['load', '--subset', '2', '--client-id', String(id), '--json', '--concurrency', '4', '--prefix', 'sub', '--etcd', t.etcd!.endpoints, ...more];
    const summaryOf = (stdout: string[]) => JSON.parse(stdout[stdout.length - 1]) as { backends: Record<string, number>; failed: number; ok: number };

    // Client 0 runs on while one of its two servers leaves; client 1 meanwhile, untouched.
    const c0 = new MeshProcess(load(0, ['--duration', '4s']));
    const c1 = new MeshProcess(load(1, ['--total', '200']));
    const [first] = await Promise.all([c0.waitForLog('resolver.subset_change'), c1.waitForLog('resolver.subset_change')]);
    const initial = (first.added as string[]).sort();
    expect(initial).toEqual(subsetFor(addrs, 0, 2));
    // The two slices of a round are disjoint: client 1 holds neither of these, so the loss leaves it be.
    const lost = initial[0];
    // It leaves once client 0 calls it (a new connection takes calls only after its first health answer).
    const leaving = servers[addrs.indexOf(lost)];
    await waitFor(`client 0 calling ${lost}`, () => (leaving.servedCount > 0 ? true : undefined), 10_000);
    await leaving.shutdown('test: a held server leaves');
    const change = await c0.waitForLogLine((l) => l.event === 'resolver.subset_change' && Array.isArray(l.removed) && (l.removed as string[]).length > 0, 15_000, 'subset change after the loss');
    expect(await c1.exitWithin(20_000)).toBe(0);
    const r1 = { stdout: c1.stdout };
    const seen1 = Object.keys(summaryOf(r1.stdout).backends).sort();
    expect(seen1).toEqual(subsetFor(addrs, 1, 2));
    // Client ids 0 and 1 are the two subsets of one round: together they cover all four.
    expect(new Set([...initial, ...seen1]).size).toBe(4);
    expect(summaryOf(r1.stdout).failed).toBe(0);
    expect(change.removed).toEqual([lost]);
    expect((change.added as string[]).length).toBe(1);
    expect(initial).not.toContain((change.added as string[])[0]);
    expect(await c0.exitWithin(20_000)).toBe(0);
    const s0 = summaryOf(c0.stdout);
    console.log(`--subset 2 over 4: client 0 ${initial.join(',')} then -${lost} +${(change.added as string[])[0]}, ${s0.ok} ok ${s0.failed} failed; client 1 ${seen1.join(',')}`);
    expect(s0.failed).toBe(0);
    // The kept server was never dropped: it served before and after.
    expect(Object.keys(s0.backends).sort()).toEqual([...initial, ...(change.added as string[])].sort());
  }, 60_000);
});

// ---------------------------------------------------------------------------
// Hosts as network namespaces.

/** Why namespaces cannot be made here, or undefined when they can (probed once, at collection). */
function netnsUnavailable(): string | undefined {
  const probe = `mesh-probe-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.error || add.status !== 0) return `ip netns add failed (${add.error?.message ?? add.stderr.trim()}); needs root and CAP_SYS_ADMIN`;
  spawnSync('ip', ['netns', 'del', probe]);
  const ipt = spawnSync('iptables', ['--version'], { encoding: 'utf8' });
  if (ipt.error || ipt.status !== 0) return 'iptables is not installed (needed to cut one host off)';
  return undefined;
}

const NETNS_SKIP = netnsUnavailable();
if (NETNS_SKIP) {
  // CI runs as root with iproute2 and iptables (scripts/setup.sh): there, a missing piece is a failure, not a skip.
  if (process.env.CI === 'true') throw new Error(`missing on CI: ${NETNS_SKIP} (install: iproute2 iptables, run as root)`);
  console.warn(`scale-advertise: network-namespace test skipped: ${NETNS_SKIP}`);
}

const TAG = `m${process.pid % 100000}`;
/** Hosts and their addresses (documentation range 192.0.2.0/24). */
const HOSTS = { etcd: '192.0.2.1', a: '192.0.2.11', b: '192.0.2.12', client: '192.0.2.21' } as const;
type Host = keyof typeof HOSTS;
const ns = (h: Host | 'br') => `${TAG}-${h}`;

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

function inNs(h: Host, cmd: string, args: string[]): string {
  const r = spawnSync('ip', ['netns', 'exec', ns(h), cmd, ...args], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${ns(h)}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** A process in a namespace; stdout lines are stamped with when they arrived. */
class NsProcess {
  readonly out: { at: number; line: string }[] = [];
  readonly err: string[] = [];
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  constructor(h: Host, cmd: string, args: string[]) {
    // `ip netns exec` execs cmd, so the pid is the program's own: signals reach it.
    this.proc = spawn('ip', ['netns', 'exec', ns(h), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MESH_LOG_FORMAT: 'json', MESH_LOG_LEVEL: 'info' } });
    createInterface({ input: this.proc.stdout! }).on('line', (line) => this.out.push({ at: Date.now(), line }));
    createInterface({ input: this.proc.stderr! }).on('line', (line) => this.err.push(line));
    this.exited = new Promise((resolve) => this.proc.once('close', (code) => resolve(code)));
  }
}

describe.skipIf(NETNS_SKIP !== undefined)(`across hosts (network namespaces)${NETNS_SKIP ? ` — skipped: ${NETNS_SKIP}` : ''}`, () => {
  const procs: NsProcess[] = [];
  const made: string[] = [];
  const dataDir = mkdtempSync(path.join(tmpdir(), 'mesh-netns-etcd-'));
  const mesh = (h: Host, args: string[]) => {
    const p = new NsProcess(h, process.execPath, [MESH_MAIN, ...args]);
    procs.push(p);
    return p;
  };

  beforeAll(() => {
    // One bridge namespace as the switch; each host a namespace with one veth into it.
    for (const n of ['br', ...Object.keys(HOSTS)] as (Host | 'br')[]) {
      ip(['netns', 'add', ns(n)]);
      made.push(ns(n));
      ip(['-n', ns(n), 'link', 'set', 'lo', 'up']);
    }
    ip(['-n', ns('br'), 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', ns('br'), 'link', 'set', 'br0', 'up']);
    for (const [h, addr] of Object.entries(HOSTS) as [Host, string][]) {
      ip(['link', 'add', 'eth0', 'netns', ns(h), 'type', 'veth', 'peer', 'name', `p-${h}`, 'netns', ns('br')]);
      ip(['-n', ns('br'), 'link', 'set', `p-${h}`, 'master', 'br0', 'up']);
      ip(['-n', ns(h), 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
      ip(['-n', ns(h), 'link', 'set', 'eth0', 'up']);
    }
  });

  afterAll(async () => {
    // Processes first (a namespace lives on while a process is in it), then namespaces (their veths go with them).
    for (const p of procs) p.proc.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
    for (const n of made.reverse()) spawnSync('ip', ['netns', 'del', n]);
    rmSync(dataDir, { recursive: true, force: true });
    const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    expect(left).not.toContain(TAG);
  }, 30_000);

  it('one server host cut off from the client, its lease alive: 0 failed calls, traffic moves within a second', async () => {
    const etcdUrl = `http://${HOSTS.etcd}:2379`;
    const etcd = new NsProcess('etcd', 'etcd', [
      '--name', 'e1', '--data-dir', dataDir, '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
      '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380', '--initial-cluster', 'e1=http://127.0.0.1:2380',
    ]);
    procs.push(etcd);
    await waitFor('etcd in its namespace', () => (spawnSync('ip', ['netns', 'exec', ns('client'), 'etcdctl', `--endpoints=${HOSTS.etcd}:2379`, '--dial-timeout=1s', 'endpoint', 'health']).status === 0 ? true : undefined), 20_000, 200);
    const common = ['--etcd', `${HOSTS.etcd}:2379`, '--prefix', 'x'];
    // Each server binds every interface and advertises its host's address, as in a container.
    const a = mesh('a', ['server', '--port', '50051', '--host', '0.0.0.0', '--advertise', HOSTS.a, '--ttl', '3', ...common]);
    const b = mesh('b', ['server', '--port', '50051', '--host', '0.0.0.0', '--advertise', HOSTS.b, '--ttl', '3', ...common]);
    const registered = () => inNs('etcd', 'etcdctl', [`--endpoints=${HOSTS.etcd}:2379`, 'get', '--prefix', 'x/', '--keys-only']).split('\n').filter(Boolean).sort();
    await waitFor('both servers registered', () => (registered().length === 2 ? true : undefined), 20_000, 100);
    expect(registered()).toEqual([`x/greeter/${HOSTS.a}:50051`, `x/greeter/${HOSTS.b}:50051`]);

    const client = mesh('client', ['client', '--interval', '10ms', '--deadline', '2s', ...common]);
    const from = (h: Host) => `from ${HOSTS[h]}:50051`;
    await waitFor('replies from both hosts', () => (client.out.some((o) => o.line.endsWith(from('a'))) && client.out.some((o) => o.line.endsWith(from('b'))) ? true : undefined), 20_000, 50);

    // The cut: the client host drops everything to and from server host A; A still reaches etcd.
    inNs('client', 'iptables', ['-A', 'OUTPUT', '-d', HOSTS.a, '-j', 'DROP']);
    inNs('client', 'iptables', ['-A', 'INPUT', '-s', HOSTS.a, '-j', 'DROP']);
    const cutAt = Date.now();
    await waitFor('3 s of traffic after the cut', () => (Date.now() - cutAt >= 3000 ? true : undefined), 10_000, 100);

    // A's lease stayed alive all along: its key is still there and it is still serving.
    expect(registered()).toEqual([`x/greeter/${HOSTS.a}:50051`, `x/greeter/${HOSTS.b}:50051`]);
    expect(a.proc.exitCode).toBeNull();
    expect(b.proc.exitCode).toBeNull();

    client.proc.kill('SIGTERM');
    const code = await client.exited;
    // Packets the rule dropped on the way to A: the client did try A after the cut (in-flight calls, reconnects).
    const dropped = Number(/^\s*(\d+)/m.exec(inNs('client', 'iptables', ['-L', 'OUTPUT', '-v', '-n', '-x']).split('\n').slice(2).join('\n'))?.[1] ?? 0);
    const after = client.out.filter((o) => o.at > cutAt);
    const lastA = after.filter((o) => o.line.endsWith(from('a'))).map((o) => o.at - cutAt);
    const firstB = after.find((o) => o.line.endsWith(from('b')));
    // The longest wait between replies after the cut: what a caller saw of the move.
    let gap = after.length ? after[0].at - cutAt : Infinity;
    for (let i = 1; i < after.length; i++) gap = Math.max(gap, after[i].at - after[i - 1].at);
    const failed = errorLines(client.err);
    console.log(
      `netns cut: ${client.out.length} calls, ${failed.length} failed; after the cut ${after.length} replies, ` +
        `${lastA.length} from A (last at +${lastA.length ? Math.max(...lastA) : '-'} ms), first from B at +${firstB ? firstB.at - cutAt : '-'} ms, longest gap ${gap} ms; ${dropped} packets to A dropped`,
    );
    expect(failed).toEqual([]);
    expect(code).toBe(0);
    expect(firstB).toBeDefined();
    expect(firstB!.at - cutAt).toBeLessThan(1000);
    // Generous: on a loaded 2-core machine a plain call can take a few hundred ms.
    expect(gap).toBeLessThan(2000);
    expect(after.filter((o) => o.at - cutAt > 1000 && o.line.endsWith(from('a')))).toEqual([]);
    // Calls kept flowing to the end (a loaded 2-core machine managed ~10 calls/s).
    expect(after.filter((o) => o.at - cutAt > 1000).length).toBeGreaterThan(5);
  }, 45_000);
});
