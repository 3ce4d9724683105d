import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { runMeshInProcess } from './harness/mesh-inprocess';
import { freePort, waitFor } from './harness/ports';
import { createEtcdClient } from '../core/etcd-client';
import { encodeEndpoint } from '../balancer/endpoint-codec';

/**
 * Bad input, swept: every command's flags and arguments (missing, unknown,
 * malformed, out of range) are usage errors: exit 2 and exactly one line on
 * stderr naming the problem; registry values of every wrong kind are
 * skipped with a warning naming the key and never disturb a client; an etcd
 * that is not there, or accepts TCP and never answers, is one clear line
 * after a bounded wait.
 */

/** stderr lines that are not structured (pino JSON) logs. */
function errorLines(stderr: string[]): string[] {
  return stderr.filter((l) => l.trim() !== '' && !l.startsWith('{'));
}

/** Run many short mesh commands, a few at a time (2 cores, other suites running). */
async function pool<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }),
  );
  return out;
}

type Case = [args: string[], problem: RegExp, env?: Record<string, string>];

/**
 * Every case must exit 2 with exactly one stderr line that matches `problem`;
 * mismatches are listed together. Each case runs through the CLI's own
 * main() in this process (harness/mesh-inprocess.ts); every REAL_EVERY-th
 * case also runs as a real `mesh` process, which must say the same.
 */
const REAL_EVERY = 8;
async function expectUsageErrors(cases: Case[]): Promise<void> {
  // A closed port as the default etcd: a case that is valid by mistake fails fast instead of reaching some etcd.
  const envOf = (env?: Record<string, string>) => ({ ETCD_ENDPOINTS: closedEndpoint, ...env });
  const results: { code: number | null; stderr: string[] }[] = [];
  for (const [args, , env] of cases) results.push(await runMeshInProcess(args, envOf(env)));
  const sampled = cases.map((c, i) => ({ c, i })).filter(({ i }) => i % REAL_EVERY === 0);
  const real = await pool(sampled, 4, ({ c: [args, , env] }) => runMesh(args, envOf(env), 20_000));
  const wrong = results
    .map((r, i) => ({ r, c: cases[i] }))
    .filter(({ r, c }) => r.code !== 2 || r.stderr.length !== 1 || !/^mesh: /.test(r.stderr[0]) || !c[1].test(r.stderr[0]))
    .map(({ r, c }) => `mesh ${c[0].map((a) => JSON.stringify(a)).join(' ')} -> exit ${r.code}, stderr ${JSON.stringify(r.stderr)} (wanted ${c[1]})`);
  sampled.forEach(({ c, i }, k) => {
    const [a, b] = [results[i], real[k]];
    if (a.code !== b.code || JSON.stringify(a.stderr) !== JSON.stringify(b.stderr)) {
      wrong.push(`mesh ${c[0].map((x) => JSON.stringify(x)).join(' ')}: in-process exit ${a.code} ${JSON.stringify(a.stderr)}, real process exit ${b.code} ${JSON.stringify(b.stderr)}`);
    }
  });
  expect(wrong, wrong.join('\n')).toEqual([]);
}

let closedEndpoint: string;
let files: string;
let notPem: string;

beforeAll(async () => {
  closedEndpoint = `127.0.0.1:${await freePort()}`;
  files = mkdtempSync(path.join(tmpdir(), 'etcd-mesh-bad-input-'));
  notPem = path.join(files, 'not-a-cert.pem');
  writeFileSync(notPem, 'this is not a certificate\n');
});

afterAll(async () => {
  await MeshProcess.killAll();
  rmSync(files, { recursive: true, force: true });
});

describe('usage errors: exit 2, one line naming the problem', () => {
  it('server', async () => {
    await expectUsageErrors([
      [['server'], /required option '--port <port>' not specified/],
      [['server', '--port'], /option '--port <port>' argument missing/],
      [['server', '--port', 'abc'], /--port.*"abc" is not an integer/],
      [['server', '--port', ''], /--port.*"" is not an integer/],
      [['server', '--port', '1.5'], /--port.*is not an integer/],
      [['server', '--port', '-1'], /--port.*-1 is out of range 0..65535/],
      [['server', '--port', '65536'], /--port.*65536 is out of range/],
      [['server', '--port', '99999999999999999999'], /--port.*out of range/],
      [['server', '--port', '0', '--ttl', '0'], /--ttl.*0 is out of range 1..86400/],
      [['server', '--port', '0', '--ttl', '-5'], /--ttl.*out of range/],
      [['server', '--port', '0', '--ttl', '10s'], /--ttl.*"10s" is not an integer/],
      [['server', '--port', '0', '--ttl', '86401'], /--ttl.*out of range/],
      [['server', '--port', '0', '--host', ''], /--host.*is not a host name or IP address/],
      [['server', '--port', '0', '--host', 'bad host'], /--host.*is not a host name or IP address/],
      [['server', '--port', '0', '--host', 'a/b'], /--host.*is not a host name/],
      [['server', '--port', '0', '--service', ''], /--service.*must not be empty/],
      [['server', '--port', '0', '--service', 'a/b'], /--service.*must not contain "\/"/],
      [['server', '--port', '0', '--service', 'two words'], /--service.*spaces/],
      [['server', '--port', '0', '--service', '.hidden'], /--service.*is not a service name/],
      [['server', '--port', '0', '--prefix', ''], /--prefix.*is not a key prefix/],
      [['server', '--port', '0', '--prefix', '/'], /--prefix.*is not a key prefix/],
      [['server', '--port', '0', '--prefix', 'a//b'], /--prefix.*is not a key prefix/],
      [['server', '--port', '0', '--prefix', 'tab\there'], /--prefix.*spaces or control characters/],
      [['server', '--port', '0', '--elect', 'a/b'], /--elect.*must not contain "\/"/],
      [['server', '--port', '0', '--bogus'], /unknown option '--bogus'/],
      [['server', '--port', '0', '--pot', '1'], /unknown option '--pot'/],
      [['server', '--port', '0', 'extra'], /too many arguments/],
      [['server', '--port', '0', '--tls-cert', '/nonexistent/cert.pem', '--tls-key', notPem], /--tls-cert.*cannot read \/nonexistent\/cert.pem: no such file/],
      [['server', '--port', '0', '--tls-cert', files], /--tls-cert.*is a directory/],
      [['server', '--port', '0', '--tls-cert', notPem], /--tls-cert and --tls-key go together/],
      [['server', '--port', '0', '--tls-ca', notPem], /--tls-ca needs --tls-cert and --tls-key/],
      [['server', '--port', '0', '--tls-cert', notPem, '--tls-key', notPem], /--tls-cert .*is not a PEM file/],
    ]);
  });

  it('etcd connection flags (on server, client, load)', async () => {
    const etcdCases = (cmd: string[]): Case[] => [
      [[...cmd, '--etcd', ''], /--etcd.*is not a list of etcd endpoints/],
      [[...cmd, '--etcd', 'localhost'], /--etcd.*"localhost" is not host:port/],
      [[...cmd, '--etcd', '127.0.0.1:0'], /--etcd.*is not host:port/],
      [[...cmd, '--etcd', '127.0.0.1:99999'], /--etcd.*is not host:port/],
      [[...cmd, '--etcd', 'ftp://127.0.0.1:2379'], /--etcd.*is not host:port or http\(s\):\/\/host:port/],
      [[...cmd, '--etcd', 'http://'], /--etcd.*is not host:port/],
      [[...cmd, '--etcd', '127.0.0.1:2379,,127.0.0.1:2380'], /--etcd.*is not a list of etcd endpoints/],
      [[...cmd, '--etcd', 'a b:1'], /--etcd.*is not host:port/],
      [[...cmd, '--dial-timeout', '0'], /--dial-timeout.*must be greater than zero/],
      [[...cmd, '--dial-timeout', 'soon'], /--dial-timeout.*"soon" is not a duration/],
      [[...cmd, '--dial-timeout', '-1s'], /--dial-timeout.*is not a duration/],
      [[...cmd, '--dial-timeout', '1000h'], /--dial-timeout.*is too long/],
      [[...cmd, '--cacert', '/nonexistent/ca.pem'], /--cacert.*cannot read \/nonexistent\/ca.pem: no such file/],
      [[...cmd, '--cacert', notPem], /--cacert .*is not a PEM file/],
      [[...cmd, '--cert', notPem], /--cert and --key go together/],
      [[...cmd, '--user', 'alice'], /--user alice has no password/],
      [[...cmd, '--user', ''], /--user needs a user name/],
      [[...cmd, '--user', ':secret'], /--user needs a user name/],
      [[...cmd, '--password', 'secret'], /--password needs --user/],
      [cmd, /ETCD_ENDPOINTS.*"nonsense" is not host:port/, { ETCD_ENDPOINTS: 'nonsense' }],
      [cmd, /ETCDCTL_ENDPOINTS.*is not host:port/, { ETCD_ENDPOINTS: '', ETCDCTL_ENDPOINTS: 'nonsense' }], // empty means unset
      [cmd, /ETCDCTL_DIAL_TIMEOUT.*is not a duration/, { ETCDCTL_DIAL_TIMEOUT: 'whenever' }],
      [cmd, /ETCDCTL_CACERT.*cannot read \/nonexistent\/env.pem/, { ETCDCTL_CACERT: '/nonexistent/env.pem' }],
      [cmd, /--user bob has no password/, { ETCDCTL_USER: 'bob' }],
    ];
    // All of them on client; server and load share the same code (cli/common.ts), so a sample there.
    const sample = (cases: Case[]) => cases.filter((_, i) => i % 4 === 0);
    await expectUsageErrors([...etcdCases(['client']), ...sample(etcdCases(['server', '--port', '0'])), ...sample(etcdCases(['load']))]);
  });

  it('client', async () => {
    await expectUsageErrors([
      [['client', '--count', '0'], /--count.*0 is out of range/],
      [['client', '--count', '-5'], /--count.*out of range/],
      [['client', '--count', 'many'], /--count.*is not an integer/],
      [['client', '--count', '1e3'], /--count.*is not an integer/],
      [['client', '--count', ' 3'], /--count.*" 3" is not an integer/],
      [['server', '--port', '0', '--weight', '5 '], /--weight.*"5 " is not an integer/],
      [['client', '--interval', 'often'], /--interval.*is not a duration/],
      [['client', '--interval', '-1s'], /--interval.*is not a duration/],
      [['client', '--interval', '1x'], /--interval.*is not a duration/],
      [['client', '--interval', '9999999h'], /--interval.*is too long/],
      [['client', '--deadline', '0'], /--deadline.*must be greater than zero/],
      [['client', '--deadline', '0ms'], /--deadline.*must be greater than zero/],
      [['client', '--deadline', '1.5.5s'], /--deadline.*is not a duration/],
      [['client', '--target', ''], /--target.*must not be empty/],
      [['client', '--target', 'etcd:///'], /--target.*is not a gRPC target/],
      [['client', '--target', 'etcd:///a//b'], /--target.*is not a gRPC target/],
      [['client', '--service', 'a/b'], /--service.*must not contain "\/"/],
      [['client', '--service', ''], /--service.*must not be empty/],
      [['client', '--prefix', '//'], /--prefix.*is not a key prefix/],
      [['client', '--tls-server-name', 'greeter'], /--tls-server-name needs --tls-ca/],
      [['client', '--tls-ca', '/nonexistent/ca.pem'], /--tls-ca.*cannot read/],
      [['client', '--tls-ca', notPem], /--tls-ca .*is not a PEM file/],
      [['client', '--tls-ca', notPem, '--tls-server-name', 'not a name'], /--tls-server-name.*is not a host name/],
      [['client', '--tls-cert', notPem], /--tls-cert and --tls-key go together/],
      [['client', '--frobnicate'], /unknown option '--frobnicate'/],
      [['client', 'world'], /too many arguments/],
    ]);
  });

  it('load', async () => {
    await expectUsageErrors([
      [['load', '--concurrency', '0'], /--concurrency.*0 is out of range 1..10000/],
      [['load', '--concurrency', '10001'], /--concurrency.*out of range/],
      [['load', '--concurrency', 'lots'], /--concurrency.*is not an integer/],
      [['load', '--concurrency', '-3'], /--concurrency.*out of range/],
      [['load', '--duration', '0'], /--duration.*must be greater than zero/],
      [['load', '--duration', 'forever'], /--duration.*is not a duration/],
      [['load', '--duration', '100000000h'], /--duration.*is too long/],
      [['load', '--deadline', '-1ms'], /--deadline.*is not a duration/],
      [['load', '--deadline', '0s'], /--deadline.*must be greater than zero/],
      [['load', '--target', 'etcd:///'], /--target.*is not a gRPC target/],
      [['load', '--json=yes'], /unknown option '--json=yes'/],
      [['load', '--tls-key', notPem], /--tls-cert and --tls-key go together/],
      [['load', '--service', 'a/b'], /--service.*must not contain "\/"/],
      [['load', 'now'], /too many arguments/],
    ]);
  });

  it('demo', async () => {
    await expectUsageErrors([
      [['demo', '--duration', '0'], /--duration.*must be greater than zero/],
      [['demo', '--duration', 'a while'], /--duration.*is not a duration/],
      [['demo', '--concurrency', '0'], /--concurrency.*out of range 1..1000/],
      [['demo', '--concurrency', '1001'], /--concurrency.*out of range/],
      [['demo', '--election', ''], /--election.*must not be empty/],
      [['demo', '--election', 'a/b'], /--election.*must not contain "\/"/],
      [['demo', '--service', 'a/b'], /--service.*must not contain "\/"/],
      [['demo', '--prefix', '/'], /--prefix.*is not a key prefix/],
      [['demo', '--etcd', 'nowhere'], /--etcd.*is not host:port/],
      [['demo', '--user', 'alice', '--etcd', closedEndpoint], /--user alice has no password/],
      [['demo', '--cacert', '/nonexistent/ca.pem'], /--cacert.*cannot read/],
      [['demo', '--bogus'], /unknown option '--bogus'/],
      [['demo', 'now'], /too many arguments/],
    ]);
  });

  it('the mesh command itself, and every other command as far as it exists', async () => {
    const top = await runMesh(['--help']); // one real process; the rest of the sweep in-process
    expect(top.code).toBe(0);
    const commands = top.stdout.map((l) => /^ {2}([a-z]+) /.exec(l)?.[1]).filter((c): c is string => Boolean(c) && c !== 'help');
    expect(commands).toEqual(expect.arrayContaining(['server', 'client', 'load', 'demo']));
    const cases: Case[] = [
      [['nosuch'], /unknown command 'nosuch'/],
      [['--bogus'], /unknown option '--bogus'/],
      [['serve'], /unknown command 'serve'/],
    ];
    // Every command (and sub-command): --help works; an unknown flag and a malformed endpoint are usage errors.
    const leaves: string[][] = [];
    const helps: Awaited<ReturnType<typeof runMeshInProcess>>[] = [];
    for (const c of commands) helps.push(await runMeshInProcess([c, '--help']));
    helps.forEach((help, i) => {
      expect(help.code, `mesh ${commands[i]} --help`).toBe(0);
      const subs = help.stdout.map((l) => /^ {2}([a-z]+) /.exec(l)?.[1]).filter((s): s is string => Boolean(s) && s !== 'help');
      if (help.stdout.some((l) => l.startsWith('Commands:'))) for (const s of subs) leaves.push([commands[i], s]);
      else leaves.push([commands[i]]);
    });
    const leafHelps: Awaited<ReturnType<typeof runMeshInProcess>>[] = [];
    for (const leaf of leaves.filter((l) => l.length > 1)) leafHelps.push(await runMeshInProcess([...leaf, '--help']));
    for (const h of leafHelps) expect(h.code).toBe(0);
    const takesEtcd = new Map(leaves.filter((l) => l.length > 1).map((l, i) => [l.join(' '), leafHelps[i].stdout.some((x) => x.includes('--etcd'))]));
    helps.forEach((h, i) => takesEtcd.set(commands[i], takesEtcd.get(commands[i]) ?? h.stdout.some((x) => x.includes('--etcd'))));
    for (const leaf of leaves) {
      cases.push([[...leaf, '--no-such-flag'], /unknown option '--no-such-flag'|missing required argument|required option/]);
      if (takesEtcd.get(leaf.join(' '))) cases.push([[...leaf, '--etcd', 'not-an-endpoint'], /--etcd.*is not host:port|missing required argument|required option/]);
    }
    // Known bad arguments of the coordination commands (as they stand).
    const known: Case[] = [
      [['lock'], /missing required argument 'name'/],
      [['lock', ''], /must not be empty/],
      [['lock', 'x', '--ttl', '0'], /--ttl.*out of range/],
      [['elect'], /missing required argument 'name'/],
      [['elect', 'x', '--ttl', '-1'], /--ttl.*out of range/],
      [['barrier', 'x', '--count', '0'], /--count.*out of range/],
      [['barrier', 'x', '--count', '2', '--timeout', '0'], /--timeout.*greater than zero/],
      [['pub', '', 'm'], /must not be empty/],
      [['pub', 't'], /missing required argument 'message'/],
      [['sub'], /missing required argument 'topic'/],
      [['queue', 'push', 'q'], /missing required argument 'value'/],
      [['queue', 'pop', 'q', '--timeout', 'abc'], /--timeout.*is not a duration/],
      [['progress', 'set', 'j', '101'], /101 is out of range 0..100/],
      [['progress', 'set', 'j', 'half'], /is not an integer/],
      [['ls', '--prefix', '/'], /--prefix.*is not a key prefix/],
      [['kv', 'get'], /missing required argument 'key'/],
      [['kv', 'get', 'k', '--limit', '-1'], /--limit.*out of range/],
    ];
    for (const k of known) if (commands.includes(k[0][0])) cases.push(k);
    await expectUsageErrors(cases);
  }, 120_000); // dozens of CLI start-ups; on a loaded 2-core machine each takes up to a second
});

describe('etcd unreachable at start-up: one clear line, bounded wait', () => {
  let silent: Server;
  let silentEndpoint: string;
  const held: Socket[] = [];

  beforeAll(async () => {
    // Accepts TCP connections and never says a word.
    silent = createServer((s) => held.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    silentEndpoint = `127.0.0.1:${(silent.address() as { port: number }).port}`;
  });

  afterAll(() => {
    for (const s of held) s.destroy();
    silent?.close();
  });

  it('closed port and a silent server, for server, client, load and demo', async () => {
    const cmds = (ep: string): string[][] => [
      ['server', '--port', '0', '--etcd', ep],
      ['client', '--count', '1', '--etcd', ep],
      ['load', '--duration', '1s', '--json', '--etcd', ep],
      ['demo', '--duration', '5s', '--json', '--etcd', ep],
    ];
    const runs = [...cmds(closedEndpoint).map((a) => ({ a, why: /refused/ })), ...cmds(silentEndpoint).map((a) => ({ a, why: /did not answer within 5000 ms: the TCP connection was accepted but nothing answered/ }))];
    const results = await pool(runs, 4, async ({ a }) => {
      const t0 = Date.now();
      const r = await runMesh(a, {}, 30_000);
      return { ...r, ms: Date.now() - t0 };
    });
    const wrong: string[] = [];
    results.forEach((r, i) => {
      const { a, why } = runs[i];
      const lines = errorLines(r.stderr);
      const isDemo = a[0] === 'demo';
      // demo (cli/command-demo.ts) has no start-up probe of its own yet: it only has to fail, in one line, in time.
      if (r.code !== 1 || lines.length !== 1 || !/^mesh: /.test(lines[0]) || (!isDemo && !why.test(lines[0])) || r.ms > 10_000) {
        wrong.push(`mesh ${a.join(' ')} -> exit ${r.code} after ${r.ms} ms, ${JSON.stringify(lines)}`);
      }
    });
    expect(wrong, wrong.join('\n')).toEqual([]);
  }, 60_000);

  it('a shorter --dial-timeout is honoured', async () => {
    const t0 = Date.now();
    const r = await runMesh(['client', '--count', '1', '--etcd', silentEndpoint, '--dial-timeout', '1s'], {}, 20_000);
    expect(r.code).toBe(1);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(/did not answer within 1000 ms/)]);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });
});

describe('bad registry values never disturb a client', () => {
  let etcd: EtcdCluster;
  let client: Etcd3;
  const prefix = 'reg/greeter/';

  beforeAll(async () => {
    etcd = await EtcdCluster.start(1);
    client = createEtcdClient({ endpoints: [etcd.endpoints] });
  });

  afterAll(async () => {
    await MeshProcess.killAll();
    client?.close();
    await etcd?.stop();
  });

  it('huge, binary, deeply nested, wrong-shape values are skipped with a warning naming the key; load has failed=0', async () => {
    const port = await freePort();
    const good = `127.0.0.1:${port}`;
    const server = new MeshProcess(['server', '--port', String(port), '--prefix', 'reg', '--etcd', etcd.endpoints]);
    await server.waitForLog('server.state', { to: 'SERVING' });

    const deadPort = await freePort(); // nothing listens here: a bad record that slipped through would cost calls
    const dead = `127.0.0.1:${deadPort}`;
    const bad: [string, string | Buffer][] = [
      ['huge', encodeEndpoint(dead, { pad: 'x'.repeat(100 * 1024) })],
      ['binary', Buffer.from([0xff, 0xfe, 0x00, 0x7b, 0x22, 0x80, 0x81, 0xc3])],
      ['deep-array', '['.repeat(20_000) + ']'.repeat(20_000)],
      ['deep-object', '{"a":'.repeat(10_000) + '{}' + '}'.repeat(10_000)],
      ['not-json', 'hello'],
      ['empty', ''],
      ['null', 'null'],
      ['array', `[${encodeEndpoint(dead)}]`],
      ['string', JSON.stringify(dead)],
      ['addr-number', '{"Op":0,"Addr":12345}'],
      ['addr-missing', '{"Op":0,"Metadata":{}}'],
      ['addr-no-port', '{"Op":0,"Addr":"127.0.0.1"}'],
      ['addr-port-0', '{"Op":0,"Addr":"127.0.0.1:0"}'],
      ['addr-port-99999', '{"Op":0,"Addr":"127.0.0.1:99999"}'],
      ['addr-url', `{"Op":0,"Addr":"http://${dead}/"}`],
      ['addr-huge', `{"Op":0,"Addr":"${'a'.repeat(60_000)}:1"}`],
      ['addr-unicode', '{"Op":0,"Addr":"ünïcødé:1"}'],
      ['op-delete', `{"Op":1,"Addr":"${dead}"}`],
      ['truncated', encodeEndpoint(dead).slice(0, 20)],
    ];
    // Valid shape, pathological Metadata: refused (nested deeper than the codec allows), with a warning.
    const deepMeta = `{"Op":0,"Addr":"${good}","Metadata":${'['.repeat(30_000)}${']'.repeat(30_000)}}`;
    const binaryKey = Buffer.concat([Buffer.from(prefix), Buffer.from([0xff, 0xfe, 0x01])]);

    // Half before the client starts (read by its Get), half while it runs (through its Watch).
    const [early, late] = [bad.slice(0, 10), bad.slice(10)];
    for (const [k, v] of early) await client.put(prefix + k).value(v);
    await client.put(binaryKey).value('{"Op":0,"Addr":');

    const load = new MeshProcess(['load', '--prefix', 'reg', '--etcd', etcd.endpoints, '--duration', '3s', '--concurrency', '4', '--json']);
    await load.waitForLog('watcher.state', { to: 'WATCHING' });
    for (const [k, v] of late) await client.put(prefix + k).value(v);
    await client.put(prefix + 'deep-metadata').value(deepMeta);
    // A good record turned bad while watched: dropped, with a warning (the real backend stays).
    await client.put(prefix + 'was-good').value(encodeEndpoint(dead));
    await client.put(prefix + 'was-good').value('garbage');
    const { code } = await load.exited;
    expect(code, load.stderr.slice(-5).join('\n')).toBe(0);
    const report = JSON.parse(load.stdout[load.stdout.length - 1]);
    expect(report.failed).toBe(0);
    expect(report.ok).toBeGreaterThan(0);
    expect(Object.keys(report.backends)).toEqual([good]);

    const warned = new Set(load.logs.filter((l) => l.event === 'watcher.bad_record').map((l) => String(l.key)));
    for (const [k] of bad) expect(warned, `warning for ${prefix}${k}`).toContain(prefix + k);
    expect(warned).toContain(prefix + 'was-good');
    expect([...warned].some((k) => k.startsWith(prefix) && k.includes('\ufffd'))).toBe(true);
    expect(warned).toContain(prefix + 'deep-metadata');
    // Every warning names its key and says why, in one line.
    for (const l of load.logs.filter((x) => x.event === 'watcher.bad_record')) {
      expect(String(l.msg)).toContain(String(l.key).slice(0, 20));
      expect(String(l.msg)).not.toContain('\n');
      expect(String(l.msg).length).toBeLessThan(1_000);
    }

    // A plain client through the same registry.
    const c = await runMesh(['client', '--prefix', 'reg', '--etcd', etcd.endpoints, '--count', '3', '--interval', '0'], {}, 20_000);
    expect(c.code).toBe(0);
    expect(c.stdout).toEqual([`Hello world from ${good}`, `Hello world from ${good}`, `Hello world from ${good}`]);
    server.kill('SIGTERM');
    await server.exited;
    await client.delete().prefix('reg/');
  }, 60_000);
});
