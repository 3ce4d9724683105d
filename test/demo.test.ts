import { afterAll, describe, expect, it } from 'vitest';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { leftovers } from './demo-leftovers';

interface DemoEvent {
  t: number;
  event: string;
  [k: string]: unknown;
}

afterAll(() => MeshProcess.killAll());

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Nothing the demo started is left: greeters, etcd members, ports, data dirs (and no process naming them). */
async function expectNothingLeft(events: DemoEvent[]): Promise<void> {
  const etcd = events.find((e) => e.event === 'etcd.started')!;
  const servers = events.filter((e) => /^server\.(started|restarted|added)$/.test(e.event));
  expect(servers.length).toBeGreaterThanOrEqual(3);
  expect(await leftovers({ dataRoot: etcd.dataRoot as string, endpoints: etcd.endpoints as string[] }, servers.map((e) => e.addr as string))).toEqual([]);
  for (const e of servers) expect(alive(e.pid as number)).toBe(false);
}

describe('mesh demo', () => {
  it('runs end to end: zero failed calls, traffic leaves the killed leader and returns, a fourth joins, leadership moves, nothing left behind', async () => {
    const res = await runMesh(['demo', '--duration', '16s', '--json'], {}, 60_000);
    expect(res.code).toBe(0);
    const summary = JSON.parse(res.stdout[res.stdout.length - 1]) as { ok: number; failed: number; events: DemoEvent[]; leaders: string[] };
    const events = summary.events;
    const names = events.map((e) => e.event);
    console.log(`[demo] ok=${summary.ok} failed=${summary.failed} leaders=${summary.leaders.join(' -> ')}\n${events.map((e) => `  ${e.t}ms ${e.event}`).join('\n')}`);
    expect(summary.failed).toBe(0);
    // The load ran (thousands of calls on a quiet machine; far fewer on a loaded shared one).
    expect(summary.ok).toBeGreaterThan(300);
    for (const e of ['etcd.started', 'leader.elected', 'server.killed', 'traffic.left', 'server.restarted', 'traffic.returned', 'server.added', 'traffic.rebalanced', 'leader.changed', 'index.loaded', 'cleanup.done']) {
      expect(names).toContain(e);
    }
    const killed = events.find((e) => e.event === 'server.killed')!;
    expect(killed.wasLeader).toBe(true);
    expect(events.find((e) => e.event === 'traffic.left')!.addr).toBe(killed.addr);
    expect(events.find((e) => e.event === 'traffic.returned')!.addr).toBe(killed.addr);
    const changed = events.find((e) => e.event === 'leader.changed')!;
    expect(changed.from).toBe(killed.addr);
    expect(changed.to).not.toBe(killed.addr);
    const rebalanced = events.find((e) => e.event === 'traffic.rebalanced')!;
    expect(Object.keys(rebalanced.shares as object)).toHaveLength(4);
    // Events are in order.
    expect(events.map((e) => e.t)).toEqual([...events.map((e) => e.t)].sort((a, b) => a - b));
    await expectNothingLeft(events);
  });

  it('--ui serves the dashboard on the demo\'s etcd; Ctrl-C (SIGINT) mid-run stops everything, cleans up, and exits 130 with the summary of what ran', async () => {
    const demo = new MeshProcess(['demo', '--duration', '60s', '--json', '--ui', '127.0.0.1:0']);
    const url = (await demo.waitForLog('demo.dashboard.started', {}, 30_000)).url as string;
    await demo.waitForLog('demo.load.started', {}, 30_000);
    // The page's own JSON: the demo's greeters, as the dashboard sees them through its etcd watch.
    const topology = (await (await fetch(`${url}api/topology`)).json()) as { services: { name: string; endpoints: unknown[] }[] };
    expect(topology.services.find((s) => s.name === 'greeter')?.endpoints.length).toBeGreaterThanOrEqual(3);
    demo.kill('SIGINT');
    const { code } = await demo.exited;
    expect(code).toBe(130);
    const summary = JSON.parse(demo.stdout[demo.stdout.length - 1]) as { failed: number; interrupted: string; events: DemoEvent[] };
    expect(summary.interrupted).toBe('SIGINT');
    expect(summary.failed).toBe(0);
    expect(summary.events.map((e) => e.event)).toContain('cleanup.done');
    await expectNothingLeft(summary.events);
    await expect(fetch(`${url}api/topology`)).rejects.toThrow();
  });
});
