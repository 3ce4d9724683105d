import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { MeshProcess } from '../demo/mesh-process';
import { isRunning } from '../demo/reaper';

/** Shared by the demo test files: a demo run in a process group of its own, and the check that it left nothing behind. */

/**
 * A `mesh demo` (or `npm run demo`, with `command: 'npm'`) in a process group
 * of its own, as a terminal's foreground job is: killGroup() is a terminal's
 * Ctrl-C or hang-up. Configuration only: the shared MeshProcess tracks it,
 * and its killAll() SIGKILLs the whole group.
 */
export function demoRun(args: string[], opts: { command?: string; cwd?: string; env?: Record<string, string> } = {}): MeshProcess {
  return new MeshProcess(args, opts.env ?? {}, { detached: true, command: opts.command, cwd: opts.cwd });
}

/** What a demo announced in its logs: its local etcd (data root and endpoints; none with --etcd), and every greeter it spawned. */
export function announced(demo: MeshProcess): { etcd: { dataRoot: string; endpoints: string[] } | undefined; greeters: string[] } {
  const l = demo.logsNamed('demo.etcd.starting')[0];
  return { etcd: l && { dataRoot: l.dataRoot as string, endpoints: l.endpoints as string[] }, greeters: demo.logsNamed('demo.server.starting').map((g) => g.addr as string) };
}

export function portClosed(endpoint: string): Promise<boolean> {
  const [host, port] = endpoint.split(':');
  return new Promise((resolve) => {
    const s = connect(Number(port), host);
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

/** Pids (other than zombies) whose command line mentions any of `needles`. */
export function processesMentioning(needles: string[]): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (!isRunning(Number(entry))) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'latin1').replace(/\0/g, ' ');
      if (needles.some((n) => cmdline.includes(n))) found.push({ pid: Number(entry), cmdline });
    } catch {
      /* exited meanwhile */
    }
  }
  return found;
}

/**
 * Nothing the demo started is left: no process whose command line names
 * its data root (etcd members) or its etcd endpoints (greeters), no data
 * dir, no open etcd or greeter port. `settleMs` > 0 polls that long first
 * (for the guard process, which cleans up after mesh is gone).
 */
export async function leftovers(etcd: { dataRoot: string; endpoints: string[] }, greeters: string[], settleMs = 0): Promise<string[]> {
  const check = async (): Promise<string[]> => {
    const left: string[] = [];
    for (const p of processesMentioning([etcd.dataRoot, etcd.endpoints.join(',')])) left.push(`process ${p.pid}: ${p.cmdline.slice(0, 120)}`);
    if (existsSync(etcd.dataRoot)) left.push(`data dir ${etcd.dataRoot}`);
    for (const ep of [...etcd.endpoints, ...greeters]) if (!(await portClosed(ep))) left.push(`port ${ep} open`);
    return left;
  };
  const until = Date.now() + settleMs;
  for (;;) {
    const left = await check();
    if (left.length === 0 || Date.now() >= until) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}
