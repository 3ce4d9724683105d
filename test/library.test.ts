import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { REPO } from './harness/mesh-process';

/**
 * The README's library example, exactly as printed: it must type-check
 * against the package's public face (`import ... from 'etcd-mesh'`, resolved
 * through package.json `exports` to dist/index.d.ts, as a user's project
 * would), and run against a real etcd.
 */
function readmeExample(): string {
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Using the library'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('README has no ```ts block under "## Using the library"');
  return m[1];
}

let t: Partial<TestEtcd> = {};
// Inside the package, so that `etcd-mesh` resolves to this package by name (self-reference).
const dir = path.join(REPO, '.tmp', 'readme-example');

beforeAll(async () => {
  t = await startTestEtcd(1);
});
afterAll(async () => {
  await stopTestEtcd(t);
  rmSync(dir, { recursive: true, force: true });
});

describe('the library face', () => {
  it('the README example imports etcd-mesh by name, type-checks, serves and registers a backend (serveAndRegister) and gets a reply through the etcd resolver with health checking', async () => {
    const code = readmeExample();
    expect(code).toMatch(/from 'etcd-mesh'/);
    // The backend is served by the generic helper, the client health-checks (issue 25.3, 21.4).
    expect(code).toMatch(/serveAndRegister\(server, /);
    expect(code).toMatch(/healthCheckConfig: \{ serviceName: '' \}/);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'example.ts'), code);
    writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'node16', moduleResolution: 'node16', strict: true, types: ['node'], outDir: 'out', rootDir: '.', skipLibCheck: true },
        files: ['example.ts'],
      }),
    );
    const tsc = spawnSync(process.execPath, [path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8', timeout: 60_000 });
    expect(tsc.stdout + tsc.stderr, 'tsc output').toBe('');
    expect(tsc.status).toBe(0);

    const run = spawnSync(process.execPath, [path.join(dir, 'out', 'example.js')], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, ETCD_ENDPOINTS: t.etcd!.endpoints, MESH_LOG_LEVEL: 'warn' },
    });
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe('Hello world\n');
    expect(run.status).toBe(0);
    // close() revoked the lease: nothing is left registered.
    const left = await t.client!.getAll().prefix('services/greeter/').count();
    expect(left).toBe(0);
  });

  it('index.ts exports the public API with doc comments', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const api = require(path.join(REPO, 'dist', 'index.js')) as Record<string, unknown>;
    for (const name of ['createEtcdClient', 'registerEtcdResolver', 'meshClientOptions', 'LeaseRegistration', 'encodeEndpoint', 'decodeEndpoint', 'EtcdMutex', 'Election', 'EtcdQueue', 'DoubleBarrier', 'publish', 'Subscription', 'setProgress', 'ProgressWatch', 'ClusterMonitor', 'ListWatch', 'MeshServer', 'serveAndRegister', 'drainOnSignals', 'registerHealthCheckBalancer', 'withHealthCheck']) {
      expect(typeof api[name], name).toBe('function');
    }
    const pkg = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { exports: Record<string, { types: string; default: string }>; types: string };
    expect(pkg.exports['.']).toEqual({ types: './dist/index.d.ts', default: './dist/index.js' });
    expect(pkg.types).toBe('dist/index.d.ts');
  });
});
