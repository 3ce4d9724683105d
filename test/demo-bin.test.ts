import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { REPO, runMesh } from './harness/mesh-process';
import { encodeEndpoint } from '../balancer/endpoint-codec';
import { freePort } from '../demo/free-port';

// The by-hand steps (docs/cli.md): `export PATH="$PWD/bin:$PATH"`, then `mesh ...`.
const execFileP = promisify(execFile);
let t: TestEtcd;

beforeAll(async () => {
  t = await startTestEtcd(1);
});
afterAll(() => stopTestEtcd(t));

describe('the by-hand steps', () => {
  it('bin/ holds an executable `mesh` (tracked by git with its exec bit), found on PATH', async () => {
    const { stdout } = await execFileP('git', ['ls-files', '-s', 'bin'], { cwd: REPO });
    // bin/mesh is a symlink (120000) to mesh.js, which git keeps executable (100755).
    expect(stdout).toMatch(/^120000 \S+ 0\tbin\/mesh$/m);
    expect(stdout).toMatch(/^100755 \S+ 0\tbin\/mesh\.js$/m);
    const env = { ...process.env, PATH: `${path.join(REPO, 'bin')}:${process.env.PATH}` };
    const help = await execFileP('mesh', ['--help'], { env });
    expect(help.stdout).toMatch(/Usage: mesh/);
  });

  it('mesh client says when no backend is registered, and when the registered ones are unreachable', async () => {
    const etcdFlag = ['--etcd', t.etcd.endpoints, '--count', '1', '--deadline', '500ms'];
    const none = await runMesh(['client', '--service', 'nobody', ...etcdFlag]);
    expect(none.code).toBe(1);
    expect(none.stderr.filter((l) => l.startsWith('mesh: '))).toEqual([expect.stringMatching(/^mesh: call failed: no backend is registered under services\/nobody\/ in etcd \(/)]);

    const dead = `127.0.0.1:${await freePort()}`;
    await t.etcd.etcdctl(['put', `services/deadsvc/${dead}`, encodeEndpoint(dead, null)]);
    const unreachable = await runMesh(['client', '--service', 'deadsvc', ...etcdFlag]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr.filter((l) => l.startsWith('mesh: '))).toEqual([
      expect.stringMatching(/^mesh: call failed: 1 key\(s\) registered under services\/deadsvc\/ in etcd, but no backend answered within the deadline/),
    ]);
  });
});
