import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MESH_MAIN, MeshProcess, REPO } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { isRunning } from '../demo/reaper';
import { announced, demoRun, leftovers } from './demo-leftovers';

// Requirement: Ctrl-C at any moment, twice, a hang-up (to the process group
// as a terminal sends it, or to mesh alone), SIGTERM through `npm run demo`:
// the demo ends within seconds, reports an interruption as 128 + the
// signal's number, and leaves no process, port or data dir behind.
// Runs are short (signalled during start-up), and run side by side.

let external: TestEtcd;
beforeAll(async () => {
  external = await startTestEtcd(1);
});
afterAll(async () => {
  await MeshProcess.killAll();
  await stopTestEtcd(external);
});

/** Start a demo, signal it when `at` is logged, and check how it ended and what it left. */
async function interrupt(at: string, send: (d: MeshProcess) => void | Promise<void>, opts: { npm?: boolean } = {}): Promise<{ demo: MeshProcess; code: number | null; ms: number }> {
  const demo = opts.npm
    ? demoRun(['run', '--silent', 'demo', '--', '--json', '--duration', '60s'], { command: 'npm', cwd: REPO, env: { MESH_DEMO_SKIP_SETUP: '1' } })
    : demoRun(['demo', '--json', '--duration', '60s']);
  await demo.waitForLog(at, {}, 45_000);
  const t0 = performance.now();
  await send(demo);
  const code = await demo.exitWithin(20_000);
  const ms = Math.round(performance.now() - t0);
  const { etcd, greeters } = announced(demo);
  expect(etcd).toBeDefined();
  // mesh cleans up before it exits: nothing to wait for.
  expect(await leftovers(etcd!, greeters)).toEqual([]);
  // An interruption is not an error.
  expect(demo.stderr.join('\n')).not.toMatch(/before serving|"level":50/);
  console.log(`[demo-signals] signalled at ${at}: exit ${code} ${ms} ms later; greeters spawned ${greeters.length}`);
  return { demo, code, ms };
}

function summary(d: MeshProcess): { interrupted?: string; events: { event: string }[] } {
  return JSON.parse(d.stdout[d.stdout.length - 1]) as { interrupted?: string; events: { event: string }[] };
}

// Generous: seven demos start side by side on a shared 2-core machine.
describe.concurrent('mesh demo interrupted', { timeout: 150_000 }, () => {
  it('SIGINT while etcd starts (first moments): exit 130, nothing left', async () => {
    const { demo, code } = await interrupt('demo.etcd.starting', (d) => d.kill('SIGINT'));
    expect(code).toBe(130);
    expect(summary(demo).interrupted).toBe('SIGINT');
  });

  it('Ctrl-C to the process group while a greeter starts, then held down: exit 130, nothing left', async () => {
    let presses = 0;
    const { demo, code } = await interrupt('demo.server.starting', async (d) => {
      // The key held down: a press every millisecond or so until mesh is
      // gone. Repeats within 250 ms count as the first press; later ones
      // hurry the cleanup (SIGKILL, no drain); the last land in mesh's final
      // milliseconds, where node's own teardown after a natural end restores
      // the default action (it died of SIGINT, not exit 130, in 4 of 4 runs).
      try {
        while (d.running && presses < 5000) {
          d.killGroup('SIGINT');
          presses++;
          await new Promise((r) => setTimeout(r, 1));
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    });
    expect(presses).toBeGreaterThan(1);
    expect(code).toBe(130);
    expect(summary(demo).events.map((e) => e.event)).toContain('cleanup.done');
  });

  it('hang-up to the process group mid-run: exit 129, nothing left', async () => {
    const { demo, code } = await interrupt('demo.load.started', (d) => d.killGroup('SIGHUP'));
    expect(code).toBe(129);
    expect(summary(demo).interrupted).toBe('SIGHUP');
  });

  it('SIGHUP to mesh alone while a greeter starts: exit 129, nothing left', async () => {
    const { code } = await interrupt('demo.server.starting', (d) => d.kill('SIGHUP'));
    expect(code).toBe(129);
  });

  it('SIGTERM to `npm run demo` reaches mesh: it cleans up and exits 143', async () => {
    const { demo } = await interrupt('demo.etcd.started', (d) => d.kill('SIGTERM'), { npm: true });
    expect(demo.logs.find((l) => l.event === 'demo.interrupted')).toMatchObject({ by: 'SIGTERM' });
  });

  it('two demos on one external etcd: each campaigns in its own namespace and deletes only its own keys', async () => {
    const etcdFlags = ['--etcd', external.etcd.endpoints, '--json', '--duration', '60s'];
    const keys = async (prefix: string) => (await external.etcd.etcdctl(['get', '--prefix', prefix, '--keys-only'])).stdout.split('\n').filter(Boolean);
    const a = demoRun(['demo', '--service', 'greeter-a', ...etcdFlags]);
    const electionA = (await a.waitForLog('demo.etcd.external', {}, 30_000)).election as string;
    expect(electionA).toMatch(/^demo-index-[0-9a-f]{8}$/);
    await a.waitForLog('demo.leader.elected', {}, 45_000);
    expect(await keys(`${electionA}/`)).not.toEqual([]);
    // A second demo starts, runs, and is stopped (its cleanup deletes its keys): the first one's stay.
    const b = demoRun(['demo', '--service', 'greeter-b', ...etcdFlags]);
    const electionB = (await b.waitForLog('demo.etcd.external', {}, 30_000)).election as string;
    expect(electionB).not.toBe(electionA);
    await b.waitForLog('demo.leader.elected', {}, 45_000);
    b.kill('SIGINT');
    expect(await b.exitWithin(20_000)).toBe(130);
    expect(await keys(`${electionB}/`)).toEqual([]);
    expect(await keys(`progress/${electionB}`)).toEqual([]);
    expect(await keys(`${electionA}/`)).not.toEqual([]);
    a.kill('SIGINT');
    expect(await a.exitWithin(20_000)).toBe(130);
    await waitFor('first demo keys gone', async () => (await keys('demo-index')).length === 0 && (await keys('progress/demo-index')).length === 0, 5_000);
  });

  it('the terminal goes away (its pty closed, as when a terminal window is closed): nothing left', async () => {
    // `script` (util-linux) gives the demo a real pty; SIGKILLing it closes the pty's master side,
    // so the kernel hangs up the demo's terminal (SIGHUP, then EIO on every write).
    const dir = mkdtempSync(path.join(tmpdir(), 'demo-pty-'));
    const logFile = path.join(dir, 'stderr');
    const term = spawn('script', ['-qfec', `exec ${process.execPath} ${MESH_MAIN} demo --duration 60s 2>${logFile}`, '/dev/null'], {
      stdio: ['pipe', 'ignore', 'ignore'],
      env: { ...process.env, MESH_LOG_FORMAT: 'json', MESH_LOG_LEVEL: 'info' },
    });
    try {
      const logs = () => {
        try {
          return readFileSync(logFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
        } catch {
          return [];
        }
      };
      await waitFor('demo load started on the pty', () => logs().some((l) => l.event === 'demo.load.started'), 45_000, 50);
      const starting = logs().find((l) => l.event === 'demo.etcd.starting')!;
      const meshPid = starting.pid as number;
      term.kill('SIGKILL');
      const t0 = performance.now();
      // Running, not a zombie (an orphan's zombie may linger where pid 1 does not reap).
      await waitFor('mesh gone after the hang-up', () => !isRunning(meshPid), 20_000, 50);
      const greeters = logs().filter((l) => l.event === 'demo.server.starting').map((l) => l.addr as string);
      expect(await leftovers({ dataRoot: starting.dataRoot as string, endpoints: starting.endpoints as string[] }, greeters)).toEqual([]);
      expect(logs().find((l) => l.event === 'demo.interrupted')).toMatchObject({ by: 'SIGHUP' });
      console.log(`[demo-signals] pty hang-up: mesh gone, nothing left ${Math.round(performance.now() - t0)} ms later`);
    } finally {
      term.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('SIGKILL to mesh: its guard process kills every child and removes the data dir', async () => {
    const demo = demoRun(['demo', '--json', '--duration', '60s']);
    await demo.waitForLog('demo.server.started', {}, 45_000);
    demo.kill('SIGKILL');
    const t0 = performance.now();
    await demo.exitWithin(10_000);
    const { etcd, greeters } = announced(demo);
    expect(await leftovers(etcd!, greeters, 10_000)).toEqual([]);
    console.log(`[demo-signals] SIGKILL: nothing left ${Math.round(performance.now() - t0)} ms later (greeters spawned ${greeters.length})`);
  });
});
