import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdPermissionDeniedError, type Etcd3 } from 'etcd3';
import { EtcdCluster } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { TestPki, type CertFiles } from './harness/certs';
import { TcpProxy } from './harness/tcp-proxy';
import { createEtcdClient } from '../core/etcd-client';
import { EndpointWatcher, type EndpointSnapshot } from '../balancer/endpoint-watcher';
import { encodeEndpoint } from '../balancer/endpoint-codec';

/**
 * The mesh against a locked-down etcd: client TLS (https, client
 * certificates required), auth enabled, and least-privilege roles made with
 * the real etcdctl:
 *   greeter-server: readwrite on services/greeter/ (user srv)
 *   greeter-reader: read on services/greeter/      (user reader)
 *   user nobody: no role at all
 * Greeters serve gRPC over TLS with certificates for the service name.
 * Certificates are generated here with openssl.
 */

const PW = { root: 'root-pw', srv: 'srv-pw', reader: 'reader-pw', nobody: 'nobody-pw' };

let pki: TestPki;
let rogue: TestPki;
let etcd: EtcdCluster;
let certs: Record<'etcd' | 'etcdClient' | 'greeter' | 'other' | 'grpcClient' | 'rogueClient', CertFiles>;
let rootClient: Etcd3;

/** --etcd plus etcd TLS flags (a client certificate whose CN is no etcd user). */
function etcdTls(): string[] {
  return ['--etcd', etcd.urls, '--cacert', pki.caCert, '--cert', certs.etcdClient.cert, '--key', certs.etcdClient.key];
}

/** stderr lines that are not structured (pino JSON) logs: what a person reads. */
function errorLines(stderr: string[]): string[] {
  return stderr.filter((l) => l.trim() !== '' && !l.startsWith('{'));
}

/** Run mesh, expecting a failure: exit code, the one error line, and how long it took. */
async function failing(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; line: string; ms: number; lines: string[] }> {
  const t0 = Date.now();
  const r = await runMesh(args, env, 20_000);
  const lines = errorLines(r.stderr);
  return { code: r.code, line: lines[0] ?? '', lines, ms: Date.now() - t0 };
}

function expectOneLine(r: { code: number | null; lines: string[]; ms: number }, code: number, pattern: RegExp): void {
  expect(r.lines, r.lines.join('\n')).toHaveLength(1);
  expect(r.lines[0]).toMatch(/^mesh: /);
  expect(r.lines[0]).toMatch(pattern);
  expect(r.code).toBe(code);
  expect(r.ms).toBeLessThan(10_000);
}

const greeters: MeshProcess[] = [];

async function startGreeter(args: string[], env: Record<string, string> = {}): Promise<{ proc: MeshProcess; addr: string }> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--ttl', '5', ...etcdTls(), ...args], env);
  greeters.push(proc);
  await proc.waitForLog('server.state', { to: 'SERVING' }, 15_000);
  return { proc, addr: `127.0.0.1:${port}` };
}

/** SIGTERM every greeter (each revokes its lease: the registry is empty again) and wait for them. */
async function stopGreeters(): Promise<void> {
  const ps = greeters.splice(0);
  for (const p of ps) p.kill('SIGTERM');
  await Promise.all(ps.map((p) => p.exited));
}

beforeAll(async () => {
  pki = TestPki.create('etcd-mesh security test CA');
  rogue = TestPki.create('someone else');
  certs = {
    etcd: pki.issue('etcd', { cn: 'etcd', san: ['IP:127.0.0.1', 'DNS:localhost'] }),
    // etcd takes a client certificate's CN as the user when no password is
    // sent; this CN is nobody's, so only --user grants anything.
    etcdClient: pki.issue('etcd-client', { cn: 'mesh-client' }),
    greeter: pki.issue('greeter', { cn: 'greeter', san: ['DNS:greeter'] }),
    other: pki.issue('other', { cn: 'other-service', san: ['DNS:other-service'] }),
    grpcClient: pki.issue('grpc-client', { cn: 'greeter-client' }),
    rogueClient: rogue.issue('rogue-client', { cn: 'mesh-client' }),
  };
  // --auth-token-ttl 2: tokens expire between steps, so re-authentication is exercised too.
  etcd = await EtcdCluster.start(1, ['--auth-token-ttl', '2'], {
    tls: { cert: certs.etcd.cert, key: certs.etcd.key, ca: pki.caCert, clientCertAuth: true, clientCert: certs.etcdClient.cert, clientKey: certs.etcdClient.key },
  });
  const ctl = (...args: string[]) => etcd.etcdctl(args);
  await ctl('user', 'add', `root:${PW.root}`);
  await ctl('user', 'grant-role', 'root', 'root');
  await ctl('role', 'add', 'greeter-server');
  await ctl('role', 'grant-permission', 'greeter-server', '--prefix=true', 'readwrite', 'services/greeter/');
  await ctl('role', 'add', 'greeter-reader');
  await ctl('role', 'grant-permission', 'greeter-reader', '--prefix=true', 'read', 'services/greeter/');
  await ctl('user', 'add', `srv:${PW.srv}`);
  await ctl('user', 'grant-role', 'srv', 'greeter-server');
  await ctl('user', 'add', `reader:${PW.reader}`);
  await ctl('user', 'grant-role', 'reader', 'greeter-reader');
  await ctl('user', 'add', `nobody:${PW.nobody}`);
  await ctl('auth', 'enable');
  rootClient = createEtcdClient({ endpoints: etcd.urls.split(','), cacert: pki.caCert, cert: certs.etcdClient.cert, key: certs.etcdClient.key, user: `root:${PW.root}` });
}, 90_000);

afterAll(async () => {
  await MeshProcess.killAll();
  rootClient?.close();
  await etcd?.stop();
  pki?.remove();
  rogue?.remove();
});

describe('least-privilege roles over TLS', () => {
  it('server registers as the server role; client and load resolve as the read-only role; calls go over gRPC TLS', async () => {
    // The server's credentials from the environment, as etcdctl takes them.
    const { proc, addr } = await startGreeter(['--tls-cert', certs.greeter.cert, '--tls-key', certs.greeter.key], { ETCDCTL_USER: 'srv', ETCDCTL_PASSWORD: PW.srv });
    const key = `services/greeter/${addr}`;
    expect(JSON.parse((await rootClient.get(key).string())!)).toMatchObject({ Op: 0, Addr: addr });

    const client = await runMesh(['client', '--count', '3', '--interval', '0', ...etcdTls(), '--user', `reader:${PW.reader}`, '--tls-ca', pki.caCert], {}, 20_000);
    expect(errorLines(client.stderr)).toEqual([]);
    expect(client.code).toBe(0);
    expect(client.stdout).toEqual([`Hello world from ${addr}`, `Hello world from ${addr}`, `Hello world from ${addr}`]);

    // Everything from the environment this time: endpoints, TLS files, user.
    const load = await runMesh(['load', '--duration', '1500ms', '--concurrency', '4', '--json', '--tls-ca', pki.caCert], {
      ETCDCTL_ENDPOINTS: etcd.urls,
      ETCDCTL_CACERT: pki.caCert,
      ETCDCTL_CERT: certs.etcdClient.cert,
      ETCDCTL_KEY: certs.etcdClient.key,
      ETCDCTL_USER: `reader:${PW.reader}`,
    });
    expect(load.code, load.stderr.join('\n')).toBe(0);
    const report = JSON.parse(load.stdout[load.stdout.length - 1]);
    expect(report.ok).toBeGreaterThan(0);
    expect(report.failed).toBe(0);
    expect(Object.keys(report.backends)).toEqual([addr]);

    proc.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
    // The server role may revoke its own lease: the key is gone at once.
    expect(await rootClient.get(key).string()).toBeNull();
  });

  it('other commands take the same flags: kv, ls, pub/sub as root over TLS; kv get as the reader', async () => {
    const root = [...etcdTls(), '--user', `root:${PW.root}`];
    const { addr } = await startGreeter(['--user', `srv:${PW.srv}`]);
    const ls = await runMesh(['ls', ...root], {}, 20_000);
    expect(ls.code, ls.stderr.join('\n')).toBe(0);
    expect(ls.stdout.join('\n')).toContain(addr);
    const get = await runMesh(['kv', 'get', '--prefix', '--keys-only', 'services/greeter/', ...etcdTls(), '--user', `reader:${PW.reader}`], {}, 20_000);
    expect(get.code, get.stderr.join('\n')).toBe(0);
    expect(get.stdout).toContain(`services/greeter/${addr}`);
    const pub = await runMesh(['pub', 'secure-topic', 'hello', ...root], {}, 20_000);
    expect(pub.code, pub.stderr.join('\n')).toBe(0);
    await stopGreeters();
  });

  it('a read-only user cannot register: mesh server fails with one line, and leaves no key', async () => {
    const port = await freePort();
    const r = await failing(['server', '--port', String(port), ...etcdTls(), '--user', `reader:${PW.reader}`]);
    expectOneLine(r, 1, /user "reader" may not register under services\/greeter\/ \(permission denied\)/);
    expect(await rootClient.get(`services/greeter/127.0.0.1:${port}`).string()).toBeNull();
    expect(r.line).not.toContain(PW.reader);
  });

  it('a read-only user cannot delete a backend (mesh kv del, and the library)', async () => {
    const key = 'services/greeter/127.0.0.1:65000';
    await rootClient.put(key).value(encodeEndpoint('127.0.0.1:65000'));
    const del = await failing(['kv', 'del', key, ...etcdTls(), '--user', `reader:${PW.reader}`]);
    expect(del.code).not.toBe(0);
    expect(del.ms).toBeLessThan(10_000);
    expect(del.lines.join('\n')).toMatch(/permission denied/i);
    const reader = createEtcdClient({ endpoints: etcd.urls.split(','), cacert: pki.caCert, cert: certs.etcdClient.cert, key: certs.etcdClient.key, user: `reader:${PW.reader}` });
    try {
      await expect(reader.delete().key(key).exec()).rejects.toBeInstanceOf(EtcdPermissionDeniedError);
      await expect(reader.put(key).value('x').exec()).rejects.toBeInstanceOf(EtcdPermissionDeniedError);
      expect(await reader.get(key).string()).toBe(encodeEndpoint('127.0.0.1:65000'));
    } finally {
      reader.close();
      await rootClient.delete().key(key);
    }
  });

  it('the server role may not leave its prefix', async () => {
    const r = await failing(['server', '--port', '0', '--prefix', 'elsewhere', ...etcdTls(), '--user', `srv:${PW.srv}`]);
    expectOneLine(r, 1, /user "srv" may not read elsewhere\/greeter\/ \(permission denied\)/);
  });
});

describe('TLS without client certificates or auth (server-side TLS only)', () => {
  let serverTlsOnly: EtcdCluster;

  beforeAll(async () => {
    serverTlsOnly = await EtcdCluster.start(1, [], { tls: { cert: certs.etcd.cert, key: certs.etcd.key, ca: pki.caCert } });
  });

  afterAll(async () => {
    await serverTlsOnly?.stop();
  });

  it('server and client need only https:// and the CA (from ETCDCTL_CACERT)', async () => {
    const env = { ETCDCTL_CACERT: pki.caCert };
    const port = await freePort();
    const server = new MeshProcess(['server', '--port', String(port), '--etcd', serverTlsOnly.urls], env);
    greeters.push(server);
    await server.waitForLog('server.state', { to: 'SERVING' });
    const c = await runMesh(['client', '--count', '1', '--etcd', serverTlsOnly.urls], env, 20_000);
    expect(c.stdout).toEqual([`Hello world from 127.0.0.1:${port}`]);
    // host:port plus --cacert also means TLS, as with etcdctl.
    const c2 = await runMesh(['client', '--count', '1', '--etcd', serverTlsOnly.endpoints, '--cacert', pki.caCert], {}, 20_000);
    expect(c2.stdout).toEqual([`Hello world from 127.0.0.1:${port}`]);
    // Without the CA: one line, not a hang.
    const noCa = await failing(['client', '--count', '1', '--etcd', serverTlsOnly.urls]);
    expectOneLine(noCa, 1, /cannot verify etcd's TLS certificate \(pass --cacert\)/);
    await stopGreeters();
  });
});

describe('bad credentials fail fast with one clear line', () => {
  const commands = (extra: string[]): string[][] => [
    ['server', '--port', '0', ...extra],
    ['client', '--count', '1', ...extra],
    ['load', '--duration', '1s', '--json', ...extra],
  ];

  it('wrong password (server, client, load)', async () => {
    const runs = await Promise.all(commands([...etcdTls(), '--user', 'reader:not-the-password']).map((a) => failing(a)));
    for (const r of runs) {
      expectOneLine(r, 1, /rejected user "reader": wrong user name or password/);
      expect(r.line).not.toContain('not-the-password');
    }
  });

  it('unknown user, and a user with no role at all', async () => {
    expectOneLine(await failing(['client', '--count', '1', ...etcdTls(), '--user', 'ghost:pw']), 1, /rejected user "ghost"/);
    expectOneLine(await failing(['client', '--count', '1', ...etcdTls(), '--user', `nobody:${PW.nobody}`]), 1, /user "nobody" may not read services\/greeter\/ \(permission denied\)/);
    expectOneLine(await failing(['server', '--port', '0', ...etcdTls(), '--user', `nobody:${PW.nobody}`]), 1, /user "nobody" may not read services\/greeter\/ \(permission denied\)/);
  });

  it('no --user against an etcd with auth enabled', async () => {
    expectOneLine(await failing(['client', '--count', '1', ...etcdTls()]), 1, /authentication enabled .*pass --user/);
  });

  it('missing client certificate, untrusted client certificate, unknown CA, plain text to a TLS port', async () => {
    const user = ['--user', `reader:${PW.reader}`];
    const [noCert, rogueCert, noCa, plain] = await Promise.all([
      failing(['client', '--count', '1', '--etcd', etcd.urls, '--cacert', pki.caCert, ...user]),
      failing(['client', '--count', '1', '--etcd', etcd.urls, '--cacert', pki.caCert, '--cert', certs.rogueClient.cert, '--key', certs.rogueClient.key, ...user]),
      failing(['load', '--duration', '1s', '--etcd', etcd.urls, '--cacert', rogue.caCert, '--cert', certs.etcdClient.cert, '--key', certs.etcdClient.key, ...user]),
      failing(['server', '--port', '0', '--etcd', etcd.endpoints, '--user', `srv:${PW.srv}`]),
    ]);
    expectOneLine(noCert, 1, /etcd requires a client certificate: pass --cert and --key/);
    expectOneLine(rogueCert, 1, /etcd does not accept the client certificate/);
    expectOneLine(noCa, 1, /cannot verify etcd's TLS certificate with --cacert/);
    expectOneLine(plain, 1, /etcd speaks TLS on that port: use https:\/\//);
  });

  it('--user without a password, and unreadable or mismatched TLS files, are usage errors (exit 2)', async () => {
    const notPem = pki.write('not-a-cert.pem', 'hello\n');
    const cases: [string[], RegExp][] = [
      [['client', ...etcdTls(), '--user', 'reader'], /--user reader has no password/],
      [['client', ...etcdTls(), '--user', ':x'], /--user needs a user name/],
      [['client', '--etcd', etcd.urls, '--cacert', '/nonexistent/ca.pem'], /--cacert .* cannot read \/nonexistent\/ca.pem: no such file/],
      [['client', '--etcd', etcd.urls, '--cacert', notPem], /--cacert .*not a PEM file/],
      [['client', '--etcd', etcd.urls, '--cacert', pki.caCert, '--cert', certs.etcdClient.cert], /--cert and --key go together/],
      [['client', '--etcd', etcd.urls, '--cacert', pki.caCert, '--cert', certs.etcdClient.cert, '--key', certs.greeter.key], /not a matching PEM certificate and key/],
      [['client', '--etcd', etcd.urls], /cannot read \/nonexistent\/env.pem/],
    ];
    const runs = await Promise.all(cases.map(([args], i) => failing(args, i === cases.length - 1 ? { ETCDCTL_CACERT: '/nonexistent/env.pem' } : {})));
    runs.forEach((r, i) => expectOneLine(r, 2, cases[i][1]));
  });
});

describe('gRPC TLS between clients and greeters', () => {
  const reader = () => [...etcdTls(), '--user', `reader:${PW.reader}`];

  it('verifies the greeter certificate against the service name; a certificate for another name fails', async () => {
    // A greeter for service "greeter" whose certificate names "other-service".
    const { proc, addr } = await startGreeter(['--prefix', 'services', '--service', 'greeter', '--tls-cert', certs.other.cert, '--tls-key', certs.other.key, '--user', `srv:${PW.srv}`]);
    const wrong = await runMesh(['client', '--count', '1', ...reader(), '--tls-ca', pki.caCert, '--deadline', '1s'], {}, 20_000);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toEqual([]);
    expect(errorLines(wrong.stderr).join('\n')).toMatch(/call failed: .*(altnames|does not match)/);
    // The same greeter verified under the name its certificate carries.
    const right = await runMesh(['client', '--count', '1', ...reader(), '--tls-ca', pki.caCert, '--tls-server-name', 'other-service'], {}, 20_000);
    expect(right.stdout).toEqual([`Hello world from ${addr}`]);
    expect(right.code).toBe(0);
    // Neither plain text nor a CA that did not sign it gets through.
    const plain = await runMesh(['client', '--count', '1', ...reader()], {}, 20_000);
    expect(plain.code).toBe(1);
    const untrusted = await runMesh(['client', '--count', '1', ...reader(), '--tls-ca', rogue.caCert, '--tls-server-name', 'other-service'], {}, 20_000);
    expect(untrusted.code).toBe(1);
    expect(errorLines(untrusted.stderr).join('\n')).toMatch(/call failed: .*(certificate|verify)/i);
    // SIGTERM: the greeter revokes its lease, so the next test starts with an empty registry.
    proc.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
    expect(await rootClient.getAll().prefix('services/greeter/').keys()).toEqual([]);
  });

  it('mutual TLS: a greeter with --tls-ca answers only clients with a certificate it trusts', async () => {
    const { proc, addr } = await startGreeter(['--tls-cert', certs.greeter.cert, '--tls-key', certs.greeter.key, '--tls-ca', pki.caCert, '--user', `srv:${PW.srv}`]);
    const without = await runMesh(['client', '--count', '1', ...reader(), '--tls-ca', pki.caCert], {}, 20_000);
    expect(without.code).toBe(1);
    const withCert = await runMesh(['client', '--count', '1', ...reader(), '--tls-ca', pki.caCert, '--tls-cert', certs.grpcClient.cert, '--tls-key', certs.grpcClient.key], {}, 20_000);
    expect(withCert.stdout).toEqual([`Hello world from ${addr}`]);
    const rogueCert = await runMesh(['client', '--count', '1', ...reader(), '--tls-ca', pki.caCert, '--tls-cert', certs.rogueClient.cert, '--tls-key', certs.rogueClient.key], {}, 20_000);
    expect(rogueCert.code).toBe(1);
    // SIGTERM: the greeter revokes its lease, so the next test starts with an empty registry.
    proc.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
    expect(await rootClient.getAll().prefix('services/greeter/').keys()).toEqual([]);
  });
});

describe('auth tokens that etcd forgets, and watches etcd refuses', () => {
  it('a watch stream re-opened after the token expired gets a fresh token (resolver keeps seeing changes)', async () => {
    const [host, port] = etcd.endpoints.split(',')[0].split(':');
    const proxy = await TcpProxy.start(host, Number(port));
    try {
      const a = await startGreeter(['--user', `srv:${PW.srv}`]);
      const viaProxy = ['--etcd', `https://${proxy.endpoint}`, '--cacert', pki.caCert, '--cert', certs.etcdClient.cert, '--key', certs.etcdClient.key];
      const client = new MeshProcess(['client', '--interval', '100ms', '--count', '400', ...viaProxy, '--user', `reader:${PW.reader}`]);
      await waitFor('first reply', () => client.stdout.length > 0, 10_000);
      // Idle past --auth-token-ttl (2 s): etcd forgets the client's token. Then
      // the stream drops (a network blip) and etcd3 re-opens it with that token.
      await new Promise((r) => setTimeout(r, 3_000));
      expect(proxy.cut()).toBeGreaterThan(0);
      await waitFor('watch re-opened', () => client.logs.some((l) => l.event === 'watch.disconnected'), 5_000);
      const b = await startGreeter(['--user', `srv:${PW.srv}`]);
      await waitFor(`client sees ${b.addr} after the stream was re-opened`, () => client.stdout.some((l) => l.endsWith(b.addr)), 10_000);
      expect(client.stdout.some((l) => l.endsWith(a.addr))).toBe(true);
      client.kill('SIGTERM');
      await client.exited;
    } finally {
      await stopGreeters();
      await proxy.close();
    }
  }, 60_000);

  it('a watch etcd refuses (permission denied) does not stall the other watches of the same client', async () => {
    const reader = createEtcdClient({ endpoints: etcd.urls.split(','), cacert: pki.caCert, cert: certs.etcdClient.cert, key: certs.etcdClient.key, user: `reader:${PW.reader}` });
    const w = new EndpointWatcher(reader, 'services/greeter/');
    try {
      const refused = reader.watch().prefix('elsewhere/').watcher();
      const refusal = new Promise<Error>((resolve) => refused.once('error', resolve));
      const sets: string[][] = [];
      w.on('update', (snap: EndpointSnapshot) => sets.push(snap.endpoints.map((e) => e.addr)));
      w.start();
      expect(String(await refusal)).toMatch(/permission denied/);
      await waitFor('first set', () => sets.length > 0, 5_000);
      await rootClient.put('services/greeter/127.0.0.1:65001').value(encodeEndpoint('127.0.0.1:65001'));
      await waitFor('the put, through the watch', () => sets.some((set) => set.includes('127.0.0.1:65001')), 5_000);
    } finally {
      w.close();
      reader.close();
      await rootClient.delete().key('services/greeter/127.0.0.1:65001');
    }
  });

  it('after an etcd restart, the resolver and the registration carry on', async () => {
    const a = await startGreeter(['--user', `srv:${PW.srv}`]);
    const client = new MeshProcess(['client', '--interval', '100ms', '--count', '400', ...etcdTls(), '--user', `reader:${PW.reader}`]);
    await waitFor('first reply', () => client.stdout.length > 0, 10_000);
    // Outlive --auth-token-ttl, then restart etcd (etcd 3.4 may restore simple
    // tokens by replaying its log, so this is about the streams, not the token).
    await new Promise((r) => setTimeout(r, 2_500));
    await etcd.kill(0);
    await etcd.restart(0);
    // A backend that joins now must reach the long-running client through its watch.
    const b = await startGreeter(['--user', `srv:${PW.srv}`]);
    await waitFor(`client sees ${b.addr}`, () => client.stdout.some((l) => l.endsWith(b.addr)), 15_000);
    // And the first server is still registered (its lease kept alive throughout).
    expect(await rootClient.get(`services/greeter/${a.addr}`).string()).not.toBeNull();
    client.kill('SIGTERM');
    await client.exited;
    expect(client.stderr.filter((l) => l.startsWith('call failed'))).toEqual([]);
    await stopGreeters();
  }, 60_000);
});
