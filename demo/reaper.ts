import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * Parent-death guard, run as `node -e` in a session of its own. The demo
 * tells it on stdin which pids (`pid N`, `gone N`) and data dirs (`dir
 * "JSON"`) it owns; `done` means the demo cleaned up itself. If stdin ends
 * without `done`, the demo died without cleaning up (SIGKILL, crash): the
 * guard SIGKILLs the pids still running the same command line (a reused pid
 * is left alone), waits for them to die, and removes the dirs.
 */
export const REAPER_JS = `
const fs = require('fs');
const procs = new Map();
const dirs = new Set();
let buf = '', done = false;
const cmdline = (pid) => { try { return fs.readFileSync('/proc/' + pid + '/cmdline', 'latin1'); } catch { return undefined; } };
const running = (pid) => { try { const s = fs.readFileSync('/proc/' + pid + '/stat', 'latin1'); return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) !== 'Z'; } catch { return false; } };
for (const sig of ['SIGINT', 'SIGHUP', 'SIGTERM', 'SIGQUIT', 'SIGTSTP']) process.on(sig, () => undefined);
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, i); buf = buf.slice(i + 1);
    const sp = line.indexOf(' '), verb = sp < 0 ? line : line.slice(0, sp), arg = sp < 0 ? '' : line.slice(sp + 1);
    if (verb === 'pid') procs.set(Number(arg), cmdline(Number(arg)));
    else if (verb === 'gone') procs.delete(Number(arg));
    else if (verb === 'dir') dirs.add(JSON.parse(arg));
    else if (verb === 'done') { done = true; process.exit(0); }
  }
});
process.stdin.on('end', () => {
  if (done) return;
  const mine = [...procs].filter(([pid, cmd]) => cmd !== undefined && cmdline(pid) === cmd).map(([pid]) => pid);
  for (const pid of mine) { try { process.kill(pid, 'SIGCONT'); process.kill(pid, 'SIGKILL'); } catch {} }
  const until = Date.now() + 5000;
  const finish = () => {
    if (mine.some(running) && Date.now() < until) return setTimeout(finish, 20);
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    process.exit(0);
  };
  finish();
});
`;

/** Pid of a child that is still running (not exited, not a zombie). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Block the thread for `ms` (only in the synchronous 'exit' path, where nothing else may run). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * The demo's guard process (REAPER_JS), detached in a session of its own.
 * It never keeps mesh alive: only mesh's own exit (or done()) ends its stdin.
 */
export class Reaper {
  private constructor(private readonly proc: ChildProcess) {}

  static start(): Reaper {
    const proc = spawn(process.execPath, ['-e', REAPER_JS], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    proc.stdin!.on('error', () => undefined);
    proc.unref();
    (proc.stdin as unknown as { unref?: () => void }).unref?.();
    return new Reaper(proc);
  }

  /** One line of the protocol: `pid N`, `gone N`, `dir "JSON"`. A guard already gone is ignored. */
  tell(line: string): void {
    const stdin = this.proc.stdin;
    if (stdin && !stdin.destroyed) stdin.write(`${line}\n`);
  }

  /** The demo cleaned up itself: the guard exits without touching anything. */
  done(): void {
    this.tell('done');
    this.proc.stdin?.end();
  }
}
