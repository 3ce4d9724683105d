import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { REPO } from './harness/mesh-process';
import { freePort } from '../demo/free-port';
import { waitFor } from './harness/ports';

/**
 * The package as a user gets it: packed, installed by name without dev
 * dependencies into a fresh project, and run on a terminal (a pty from
 * `script`) as well as off one. pino-pretty is a devDependency: a terminal
 * must not make the CLI or the library require it.
 */

let t: Partial<TestEtcd> = {};
let project = '';
let server: ReturnType<typeof spawn> | undefined;

/** Run `cmd` (a shell line) on a pseudo-terminal; its output is the terminal's. */
function onTerminal(cmd: string, env: NodeJS.ProcessEnv, timeoutMs = 30_000): { status: number | null; out: string } {
  const r = spawnSync('script', ['-qefc', cmd, '/dev/null'], { cwd: project, env, encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, out: r.stdout + r.stderr };
}

const LIBRARY_PROGRAM = `
const grpc = require('@grpc/grpc-js');
const { createEtcdClient, greeterPackage, LeaseRegistration, meshClientOptions, registerEtcdResolver, setMeshLogger } = require('etcd-mesh');
async function main() {
  const events = [];
  if (process.env.INJECT === '1') setMeshLogger({ error: (f, m) => events.push(['error', f, m]), warn: (f, m) => events.push(['warn', f, m]), info: (f, m) => events.push(['info', f, m]) });
  const etcd = createEtcdClient({ endpoints: process.env.ETCD_ENDPOINTS.split(',') });
  const { Greeter } = greeterPackage();
  const server = new grpc.Server();
  server.addService(Greeter.service, { SayHello: (call, reply) => reply(null, { message: 'Hello ' + call.request.name }) });
  const port = await new Promise((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  const registration = new LeaseRegistration(etcd, { prefix: 'pkg', service: 'greeter', addr: '127.0.0.1:' + port, ttlSeconds: 10 });
  await registration.start();
  registerEtcdResolver(etcd);
  const client = new Greeter('etcd:///pkg/greeter', grpc.credentials.createInsecure(), meshClientOptions({ idempotentServices: [] }));
  const reply = await new Promise((res, rej) => client.sayHello({ name: 'pty' }, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) => (e ? rej(e) : res(r))));
  console.log('REPLY ' + reply.message);
  client.close();
  await registration.close();
  server.forceShutdown();
  etcd.close();
  if (process.env.INJECT === '1') console.log('EVENTS ' + JSON.stringify(events.map(([l, f]) => [l, f.component, f.event])));
}
main().then(() => process.exit(0), (e) => { console.error('FAILED', e); process.exit(1); });
`;

beforeAll(async () => {
  t = await startTestEtcd(1);
  project = mkdtempSync(path.join(tmpdir(), 'mesh-pkg-'));
  // dist/ is built by the suite's set-up; packing runs no scripts.
  const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', project], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
  expect(pack.status, pack.stderr).toBe(0);
  const tarball = readdirSync(project).find((f) => f.endsWith('.tgz'));
  expect(tarball).toBeDefined();
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'host-project', version: '1.0.0', private: true }));
  const install = spawnSync('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', `./${tarball}`], { cwd: project, encoding: 'utf8', timeout: 150_000 });
  expect(install.status, install.stderr).toBe(0);
  writeFileSync(path.join(project, 'program.js'), LIBRARY_PROGRAM);
}, 180_000);

afterAll(async () => {
  server?.kill('SIGKILL');
  await stopTestEtcd(t);
  if (project) rmSync(project, { recursive: true, force: true });
});

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, ETCD_ENDPOINTS: t.etcd!.members.map((m) => m.endpoint).join(','), ...extra };
  // The suite's own settings are not a user's: the installed package's defaults must hold.
  delete e.MESH_LOG_LEVEL;
  delete e.MESH_LOG_FORMAT;
  return e;
}

describe('the package installed by name, without dev dependencies', () => {
  it('has no dev dependency in the host project', () => {
    expect(existsSync(path.join(project, 'node_modules', 'etcd-mesh', 'dist', 'index.js'))).toBe(true);
    expect(existsSync(path.join(project, 'node_modules', 'pino-pretty'))).toBe(false);
  });

  it('a library program runs on a terminal, and the library is quiet by default (no info lines in the host\u2019s stderr)', () => {
    const r = onTerminal('node program.js', env());
    expect(r.out).not.toMatch(/Cannot find module/);
    expect(r.out).toMatch(/REPLY Hello pty/);
    expect(r.status).toBe(0);
    // The registration and the resolver log at info: none of it reaches the host.
    expect(r.out).not.toMatch(/"level":30/);
  });

  it('a library program hands the mesh its own logger (setMeshLogger with plain level methods) and gets the events', () => {
    const r = onTerminal('node program.js', env({ INJECT: '1' }));
    expect(r.status, r.out).toBe(0);
    const line = /EVENTS (.*)/.exec(r.out);
    expect(line, r.out).not.toBeNull();
    const events = JSON.parse(line![1]) as [string, string, string][];
    // The registration's own events, at info, through the host's logger; nothing on stderr as JSON.
    expect(events.some(([level, component]) => level === 'info' && component === 'registration')).toBe(true);
    expect(r.out).not.toMatch(/"level":/);
  });

  it('the CLI runs on a terminal: --help, and mesh client against a mesh server of the same install', async () => {
    const help = onTerminal('node_modules/.bin/mesh --help', env());
    expect(help.status, help.out).toBe(0);
    expect(help.out).toMatch(/Usage: mesh/);

    const port = await freePort();
    server = spawn(path.join(project, 'node_modules', '.bin', 'mesh'), ['server', '--port', String(port), '--prefix', 'pkgcli', '--ttl', '5'], { cwd: project, env: env(), stdio: ['ignore', 'ignore', 'pipe'] });
    let serverLog = '';
    server.stderr!.on('data', (b: Buffer) => (serverLog += b.toString()));
    await waitFor(`the server to register (its log: ${serverLog})`, () => /"to":"REGISTERED"/.test(serverLog), 20_000);

    const client = onTerminal('node_modules/.bin/mesh client --prefix pkgcli --count 2 --interval 100ms', env());
    expect(client.out).not.toMatch(/Cannot find module/);
    expect(client.out).toMatch(new RegExp(`Hello world from 127\\.0\\.0\\.1:${port}`));
    expect(client.status).toBe(0);
  });
});
