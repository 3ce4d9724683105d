import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster, startTestEtcd, stopTestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { decodePercent, ProgressWatch, setProgress, type ProgressUpdate } from '../coordination/progress';

let etcd: EtcdCluster;
let client: Etcd3;

beforeAll(async () => {
  ({ etcd, client } = await startTestEtcd());
});

afterAll(() => stopTestEtcd({ etcd, client }));


describe('mesh progress', () => {
  it('a watcher (not a TTY) prints every value in order as plain lines and exits 0 when the setter reaches 100', async () => {
    const watcher = new MeshProcess(['progress', 'watch', 'build', '--etcd', etcd.endpoints]);
    await watcher.waitForLog('watch.state', { to: 'WATCHING' });
    for (const p of ['0', '25', '50', '50', '75', '100']) {
      const res = await runMesh(['progress', 'set', 'build', p, '--etcd', etcd.endpoints]);
      expect(res.code).toBe(0);
      expect(res.stdout).toEqual([]);
    }
    expect(await watcher.exitWithin()).toBe(0);
    // Every write is a change to react to, the repeated 50 included.
    expect(watcher.stdout).toEqual(['build 0%', 'build 25%', 'build 50%', 'build 50%', 'build 75%', 'build 100%']);
  });

  it('exits 0 at once when the job is already at 100', async () => {
    await runMesh(['progress', 'set', 'done-job', '100', '--etcd', etcd.endpoints]);
    const res = await runMesh(['progress', 'watch', 'done-job', '--etcd', etcd.endpoints], {}, 20_000);
    expect(res.code).toBe(0);
    expect(res.stdout).toEqual(['done-job 100%']);
  });

  it('starts from the current value, skips values that are not 0..100 with a warning, honours --prefix', async () => {
    await etcd.etcdctl(['put', 'jobs/etl', '40']);
    const watcher = new MeshProcess(['progress', 'watch', 'etl', '--prefix', 'jobs', '--etcd', etcd.endpoints]);
    await waitFor('current value', () => watcher.stdout.length === 1, 15_000);
    await etcd.etcdctl(['put', 'jobs/etl', 'half']);
    await etcd.etcdctl(['put', 'jobs/etl', '101']);
    await etcd.etcdctl(['put', 'jobs/etl', '100']);
    expect(await watcher.exitWithin()).toBe(0);
    expect(watcher.stdout).toEqual(['etl 40%', 'etl 100%']);
    expect(watcher.logs.filter((l) => l.event === 'progress.invalid').map((l) => l.value)).toEqual(['half', '101']);
  });

  it('SIGTERM before 100 is not success', async () => {
    const watcher = new MeshProcess(['progress', 'watch', 'never', '--etcd', etcd.endpoints]);
    await watcher.waitForLog('watch.state', { to: 'WATCHING' });
    watcher.kill('SIGTERM');
    expect(await watcher.exitWithin()).toBe(130);
    expect(watcher.stderr.find((l) => l.startsWith('mesh: '))).toMatch(/interrupted by SIGTERM before never reached 100%/);
  });

  it('library: ProgressWatch reports every write in order; setProgress rejects out-of-range values', async () => {
    const w = new ProgressWatch(client, 'lib-job').start();
    const seen: number[] = [];
    w.on('progress', (u: ProgressUpdate) => seen.push(u.percent));
    for (const p of [1, 2, 3, 99, 100]) await setProgress(client, 'lib-job', p);
    await waitFor('all values', () => seen.length === 5, 10_000);
    expect(seen).toEqual([1, 2, 3, 99, 100]);
    w.close();
    w.close();
    await expect(setProgress(client, 'lib-job', 101)).rejects.toThrow(RangeError);
    await expect(setProgress(client, 'lib-job', 2.5)).rejects.toThrow(RangeError);
    expect([decodePercent(Buffer.from('42\n')), decodePercent('-1'), decodePercent('1e2'), decodePercent('')]).toEqual([42, undefined, undefined, undefined]);
  });

  it('usage errors: one stderr line, exit 2', async () => {
    for (const args of [
      ['progress', 'set', 'job', '101'],
      ['progress', 'set', 'job', '-1'],
      ['progress', 'set', 'job', 'abc'],
      ['progress', 'set', 'job', '4.5'],
      ['progress', 'set', '', '5'],
      ['progress', 'set', 'job'],
      ['progress', 'watch'],
      ['progress', 'watch', ''],
      ['progress', 'watch', 'job', '--prefix', ''],
      ['progress', 'bogus'],
    ]) {
      const res = await runMesh([...args, '--etcd', etcd.endpoints]);
      expect({ args, code: res.code }).toEqual({ args, code: 2 });
      expect(res.stderr.filter((l) => l.trim() !== '')).toHaveLength(1);
    }
    for (const args of [['progress', '--help'], ['progress', 'set', '--help'], ['progress', 'watch', '--help']]) expect((await runMesh(args)).code).toBe(0);
  });
});
