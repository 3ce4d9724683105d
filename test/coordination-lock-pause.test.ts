import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster, startTestEtcd, stopTestEtcd } from './harness/etcd-cluster';
import { MeshProcess, REPO } from './harness/mesh-process';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { waitFor } from './harness/ports';
import { TcpProxy } from './harness/tcp-proxy';
import { ensureDebianPackages, type PeerAvailability } from './harness/peer-debian';
import { needTool } from './harness/need-tool';

/**
 * A holder that is stopped (SIGSTOP, Ctrl-Z) or whose wall clock steps back
 * while it is cut off from etcd must never let CMD run past the moment its
 * lease could have expired, so CMD never overlaps the next holder's.
 *
 * Each CMD appends `<who> <uptime>` lines (~every 50 ms) to a file;
 * /proc/uptime is the kernel's monotonic clock, read the same by every
 * process and untouched by libfaketime, so intervals compare across
 * processes.
 */

let etcd: EtcdCluster;
let client: Etcd3;
let dir: string;
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  ({ etcd, client } = await startTestEtcd());
  dir = mkdtempSync(path.join(tmpdir(), 'mesh-lock-pause-'));
});

afterAll(() =>
  stopTestEtcd({ etcd, client }, async () => {
    // Any CMD left running by a failed test: its process group (pids recorded by the CMDs).
    const pidFile = path.join(dir ?? '/nonexistent', 'pids');
    if (existsSync(pidFile)) {
      for (const pid of readFileSync(pidFile, 'utf8').split('\n').filter(Boolean)) {
        try {
          process.kill(-Number(pid), 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    for (const p of proxies) await p.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }),
);

function uptime(): number {
  return Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
}

/** A CMD that records its pid, then marks `<who> <uptime>` every ~50 ms until killed. */
function marker(file: string, who: string): string[] {
  return ['sh', '-c', `echo $$ >> ${dir}/pids; while :; do read up _ < /proc/uptime; echo "${who} $up" >> ${file}; sleep 0.05; done`];
}

/** A CMD that marks once, a little later once more, and exits 0. */
function briefMarker(file: string, who: string): string[] {
  return ['sh', '-c', `read up _ < /proc/uptime; echo "${who} $up" >> ${file}; sleep 0.3; read up _ < /proc/uptime; echo "${who} $up" >> ${file}`];
}

function marks(file: string, who: string): number[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith(`${who} `))
    .map((l) => Number(l.split(' ')[1]));
}

/** The process group of the first CMD recorded in `pids` is gone. */
function firstGroupGone(): boolean {
  const pid = Number(readFileSync(path.join(dir, 'pids'), 'utf8').split('\n')[0]);
  try {
    process.kill(-pid, 0);
    return false;
  } catch {
    return true;
  }
}

describe('a stopped holder never overlaps the next holder', () => {
  it('lock: SIGSTOP on mesh stops CMD (watchdog) before the lease can expire; the next holder runs after; on SIGCONT mesh kills CMD and exits 4', async () => {
    writeFileSync(path.join(dir, 'pids'), '');
    const file = path.join(dir, 'sigstop');
    const a = new MeshProcess(['lock', 'pause', '--ttl', '2', '--etcd', etcd.endpoints, '--', ...marker(file, 'A')]);
    await waitFor('A marks', () => marks(file, 'A').length >= 3, 15_000);
    const b = new MeshProcess(['lock', 'pause', '--ttl', '2', '--etcd', etcd.endpoints, '--', ...briefMarker(file, 'B')]);
    await waitFor('b queued', async () => (await client.getAll().prefix('pause/').keys()).length === 2, 15_000);
    const stoppedAt = uptime();
    a.proc.kill('SIGSTOP');
    expect(await b.exitWithin(15_000)).toBe(0);
    const lastA = Math.max(...marks(file, 'A'));
    const firstB = Math.min(...marks(file, 'B'));
    console.log(`[lock SIGSTOP] A's last mark ${(lastA - stoppedAt).toFixed(2)} s after SIGSTOP (TTL 2 s); B's first ${(firstB - stoppedAt).toFixed(2)} s after`);
    expect(lastA).toBeLessThan(firstB);
    expect(lastA - stoppedAt).toBeLessThanOrEqual(2.1);
    const countBefore = marks(file, 'A').length;
    a.proc.kill('SIGCONT');
    expect(await a.exitWithin(10_000)).toBe(4);
    // Killed while stopped: CMD never ran again.
    expect(marks(file, 'A').length).toBe(countBefore);
    expect(a.logs.some((l) => l.event === 'cmd.watchdog' && l.action === 'stopped')).toBe(true);
    // Its group is gone (reaping the killed processes may take a moment).
    await waitFor('CMD group gone', () => firstGroupGone(), 3_000);
  });

  it('elect: Ctrl-Z (SIGTSTP) stops CMD with mesh; the next leader runs alone; on SIGCONT the lost leader kills CMD and campaigns again', async () => {
    writeFileSync(path.join(dir, 'pids'), '');
    const file = path.join(dir, 'sigtstp');
    const a = new MeshProcess(['elect', 'pause-e', '--id', 'a', '--ttl', '2', '--etcd', etcd.endpoints, '--', ...marker(file, 'A')]);
    await waitFor('A marks', () => marks(file, 'A').length >= 3, 15_000);
    const b = new MeshProcess(['elect', 'pause-e', '--id', 'b', '--ttl', '2', '--etcd', etcd.endpoints, '--', ...briefMarker(file, 'B')]);
    await waitFor('b campaigns', async () => (await client.getAll().prefix('pause-e/').keys()).length === 2, 15_000);
    const stoppedAt = uptime();
    a.proc.kill('SIGTSTP');
    expect(await b.exitWithin(15_000)).toBe(0);
    const beforeB = marks(file, 'A').filter((t) => t < Math.min(...marks(file, 'B')));
    const lastA = Math.max(...beforeB);
    console.log(`[elect SIGTSTP] A's last mark ${(lastA - stoppedAt).toFixed(2)} s after SIGTSTP; B led ${(Math.min(...marks(file, 'B')) - stoppedAt).toFixed(2)} s after`);
    // Ctrl-Z stops CMD at once (not only at the lease deadline).
    expect(lastA - stoppedAt).toBeLessThan(1);
    const [bStart, bEnd] = marks(file, 'B');
    a.proc.kill('SIGCONT');
    await a.waitForLog('election.lost', {}, 10_000);
    // A leads again once B resigned, with a new CMD: none of A's marks fall inside B's term.
    await waitFor('A leads again', () => a.stdout.filter((l) => l === 'elected a').length === 2, 15_000);
    a.kill('SIGTERM');
    expect(await a.exitWithin(10_000)).toBe(143);
    expect(marks(file, 'A').filter((t) => t >= bStart - 0.01 && t <= bEnd + 0.01)).toEqual([]);
  });
});

describe('lease time is monotonic', () => {
  const lib = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
  let faketime: PeerAvailability = { ok: false, reason: 'set-up did not run' };
  beforeAll(async () => {
    faketime = await ensureDebianPackages(['faketime'], () => existsSync(lib));
  }, 900_000);

  it('a holder cut off from etcd whose wall clock steps back 20 s stops CMD within the TTL and exits 4', async (ctx) => {
    needTool(ctx, faketime, 'faketime');
    writeFileSync(path.join(dir, 'pids'), '');
    const file = path.join(dir, 'faketime');
    const clock = path.join(dir, 'faketime-offset');
    writeFileSync(clock, '+0\n');
    const proxy = await TcpProxy.start('127.0.0.1', Number(etcd.members[0].endpoint.split(':')[1]));
    proxies.push(proxy);
    const env = { LD_PRELOAD: lib, FAKETIME_TIMESTAMP_FILE: clock, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' };
    // CMD itself runs without libfaketime: only mesh's wall clock steps.
    const a = new MeshProcess(['lock', 'clock', '--ttl', '3', '--etcd', proxy.endpoint, '--', 'env', '-u', 'LD_PRELOAD', ...marker(file, 'A')], env);
    await waitFor('A marks', () => marks(file, 'A').length >= 3, 15_000);
    const cutAt = uptime();
    proxy.pause();
    proxy.cut();
    writeFileSync(clock, '-20s\n');
    const code = await a.exitWithin(15_000);
    const lastA = Math.max(...marks(file, 'A'));
    console.log(`[faketime] CMD's last mark ${(lastA - cutAt).toFixed(2)} s after the cut (TTL 3 s, wall clock stepped back 20 s)`);
    expect(code).toBe(4);
    expect(lastA - cutAt).toBeLessThanOrEqual(3.1);
    // libfaketime did reach mesh: its log timestamps (pino, Date.now()) jumped back.
    const times = a.logs.map((l) => Number(l.time)).filter((t) => t > 0);
    expect(Math.min(...times.slice(-3))).toBeLessThan(Math.max(...times) - 15_000);
    proxy.resume();
  });

  it("etcd3's own lease check (time since the last keepalive) is monotonic too: a 20 s step back does not stretch it", async (ctx) => {
    needTool(ctx, faketime, 'faketime');
    const clock = path.join(dir, 'faketime-etcd3');
    writeFileSync(clock, '+0\n');
    // A Lease's `lastKeepAlive` as etcd3 1.1.2 sets and reads it (lease.js), with our patch applied by createEtcdClient.
    const script = `
      const { createEtcdClient } = require(${JSON.stringify(path.join(REPO, 'dist', 'core', 'etcd-client.js'))});
      const { Lease } = require('etcd3/lib/lease');
      const c = createEtcdClient({ endpoints: ['127.0.0.1:1'] });
      const lease = Object.create(Lease.prototype);
      lease.lastKeepAlive = Date.now();
      setTimeout(() => require('fs').writeFileSync(${JSON.stringify(clock)}, '-20s'), 200);
      setTimeout(() => { console.log(Date.now() - lease.lastKeepAlive); c.close(); }, 600);`;
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], {
      cwd: REPO,
      env: { ...process.env, LD_PRELOAD: lib, FAKETIME_TIMESTAMP_FILE: clock, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' },
      timeout: 20_000,
    });
    const elapsed = Number(stdout.trim());
    // Without the patch this is about -19,400 ms (the wall clock went back 20 s).
    expect(elapsed).toBeGreaterThanOrEqual(550);
    expect(elapsed).toBeLessThan(5_000);
  });
});
