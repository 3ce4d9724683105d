import { createInterface } from 'node:readline';

/**
 * The clock of monotonicMs() in core/etcd-client.ts (CLOCK_MONOTONIC, ms),
 * repeated here rather than imported: importing it would load etcd3 and
 * grpc-js into this tiny process and slow its start.
 */
function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

/**
 * The watchdog of a command run under a lease (`mesh lock|elect NAME -- CMD`):
 * a tiny separate process, so that it keeps time while mesh itself is
 * stopped (SIGSTOP, Ctrl-Z, a debugger) or dead (SIGKILL, OOM).
 *
 * Contract (`node lock-watchdog.js PGID`, lines on stdin from mesh):
 * - `D <ms>`: CMD may run until monotonic time <ms> (monotonicMs(), i.e.
 *   CLOCK_MONOTONIC, which both processes share): the lease's proven
 *   validity, fed by mesh each time a keepalive is confirmed.
 * - `P` / `R`: mesh was told to stop (SIGTSTP) / continued: CMD is paused
 *   with it, and resumes only if its deadline is still ahead.
 * - CMD's process group runs iff not paused and the deadline is ahead; past
 *   the deadline the watchdog SIGSTOPs the group by itself (a stopped CMD
 *   cannot overlap the next holder), and SIGCONTs it only on a fresh
 *   deadline, which mesh sends only while its lease is proven alive.
 * - end of stdin (mesh died without cleaning up): SIGTERM to the group
 *   (with SIGCONT, so a stopped CMD can act on it) if the deadline is still
 *   ahead, else SIGKILL at once; SIGKILL 3 s later either way; then exit.
 * - On a normal end mesh kills the watchdog first, so CMD's leftovers are
 *   never touched then.
 * Each transition is reported to mesh as one line on stdout
 * (`stopped|continued|killed <reason>`), which mesh logs.
 */
const KILL_AFTER_EOF_MS = 3_000;

function main(): void {
  const pgid = Number(process.argv[2]);
  if (!Number.isInteger(pgid) || pgid <= 1) {
    process.stderr.write(`lock-watchdog: bad process group ${process.argv[2]}\n`);
    process.exit(2);
  }
  let deadline = -Infinity;
  let paused = false;
  let running = true;
  let timer: NodeJS.Timeout | undefined;

  const signal = (sig: NodeJS.Signals): boolean => {
    try {
      process.kill(-pgid, sig);
      return true;
    } catch {
      return false; // the group is gone: nothing left to guard
    }
  };
  const report = (line: string) => process.stdout.write(`${line}\n`);

  /** The one place that moves CMD between running and stopped. */
  const apply = (why: string) => {
    clearTimeout(timer);
    const now = monotonicMs();
    const shouldRun = !paused && now < deadline;
    if (shouldRun !== running) {
      running = shouldRun;
      signal(shouldRun ? 'SIGCONT' : 'SIGSTOP');
      report(`${shouldRun ? 'continued' : 'stopped'} ${why}`);
    }
    // setTimeout runs on libuv's monotonic clock; re-check when the deadline comes.
    if (shouldRun) timer = setTimeout(() => apply('lease deadline passed without a confirmed keepalive'), Math.max(0, deadline - now) + 1);
  };

  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [op, arg] = line.trim().split(/\s+/);
    if (op === 'D') {
      const d = Number(arg);
      if (!Number.isNaN(d) && d > deadline) deadline = d;
      apply('lease renewed');
    } else if (op === 'P') {
      paused = true;
      apply('mesh stopped (SIGTSTP)');
    } else if (op === 'R') {
      paused = false;
      apply('mesh continued');
    }
  });
  rl.on('close', () => {
    clearTimeout(timer);
    if (monotonicMs() < deadline) {
      signal('SIGTERM');
      signal('SIGCONT');
      report('killed mesh went away: SIGTERM');
    } else {
      signal('SIGKILL');
      report('killed mesh went away past the lease deadline: SIGKILL');
    }
    setTimeout(() => {
      signal('SIGCONT');
      signal('SIGKILL');
      process.exit(0);
    }, KILL_AFTER_EOF_MS);
  });
  // Until mesh's first `D` line (sent as soon as this process is spawned)
  // CMD runs unchecked: it was started under a lease proven valid just now.
}

if (require.main === module) main();
