import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster } from './harness/etcd-cluster';
import { MeshProcess } from './harness/mesh-process';

/**
 * `ps` shows every process's command line to every user of the machine, so
 * the demo must hand etcd credentials to the greeters it starts through
 * their environment (ETCDCTL_USER, ETCDCTL_PASSWORD, as etcdctl takes them),
 * never through argv. The demo runs against an etcd with auth enabled; its
 * own credentials come from the environment too, and every child's
 * /proc/<pid>/cmdline is sampled while it runs.
 */

const PASSWORD = 'demo-secret-pw-4711';
let etcd: EtcdCluster;

beforeAll(async () => {
  etcd = await EtcdCluster.start(1);
  await etcd.etcdctl(['user', 'add', `root:${PASSWORD}`]);
  await etcd.etcdctl(['user', 'grant-role', 'root', 'root']);
  await etcd.etcdctl(['auth', 'enable']);
}, 60_000);

afterAll(async () => {
  await MeshProcess.killAll();
  await etcd?.stop();
});

/** Pids whose parent is `ppid` (from /proc/<pid>/stat; the comm field may hold spaces, so split after its ')'). */
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(name));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function cmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

describe('mesh demo against an etcd with auth', () => {
  it('hands the credentials to its greeters through the environment: no child command line holds the password', async () => {
    const demo = new MeshProcess(['demo', '--duration', '30s', '--json', '--etcd', etcd.urls], { ETCDCTL_USER: 'root', ETCDCTL_PASSWORD: PASSWORD });
    // Every command line seen of every descendant of the demo, sampled until it exits.
    const seen = new Map<number, string>();
    let running = true;
    void demo.exited.then(() => (running = false));
    // Once the load runs, three greeters authenticated, registered and serve: enough seen; Ctrl-C ends it early.
    void demo.waitForLog('demo.load.started', {}, 40_000).then(
      () => setTimeout(() => demo.kill('SIGINT'), 300),
      () => undefined,
    );
    const until = Date.now() + 45_000;
    while (running && Date.now() < until) {
      const queue = [demo.pid];
      for (let pid = queue.shift(); pid !== undefined && queue.length < 1000; pid = queue.shift()) {
        for (const child of childrenOf(pid)) {
          const cmd = cmdline(child);
          if (cmd) seen.set(child, cmd);
          queue.push(child);
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const code = await demo.exitWithin(20_000);
    const greeters = [...seen.values()].filter((c) => / server /.test(c));
    console.log(`[demo-secrets] ${seen.size} children sampled, ${greeters.length} greeters; exit ${code}`);
    // 130: ended by the SIGINT above, after the load had started.
    expect(code, demo.stderr.slice(-5).join('\n')).toBe(130);
    // The greeters did authenticate (they registered and served), so they got the password somehow.
    expect(greeters.length).toBeGreaterThanOrEqual(3);
    for (const c of seen.values()) expect(c).not.toContain(PASSWORD);
  });
});
