import { main } from '../../cli/main';

/**
 * Run `mesh <args>` inside the test's own process, through the same
 * `main()` that bin/mesh.js calls: for sweeps of usage errors, where a
 * process per case is pure start-up cost (about 0.3 s of CPU each). What a
 * separate process would add (the exit itself, argv bytes) is covered by the
 * real spawns every sweep keeps beside it.
 *
 * Contract: runs one at a time (process.exit, stdout/stderr and the
 * environment are the process's own, swapped for the duration); a case
 * that does not reach process.exit within `timeoutMs` is reported as
 * `code: null` (a usage error that slipped through and started working).
 * Only for commands that stop at their flags: a command that got far
 * enough to open connections leaves them behind in the test's process.
 */
export interface InProcessResult {
  code: number | null;
  stdout: string[];
  stderr: string[];
}

class Exited extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

let queue: Promise<unknown> = Promise.resolve();

function lines(chunks: string[]): string[] {
  const text = chunks.join('');
  if (text === '') return [];
  return text.replace(/\n$/, '').split('\n');
}

export function runMeshInProcess(args: string[], env: Record<string, string> = {}, timeoutMs = 5_000): Promise<InProcessResult> {
  const run = queue.then(() => runNow(args, env, timeoutMs));
  queue = run.catch(() => undefined);
  return run;
}

async function runNow(args: string[], env: Record<string, string>, timeoutMs: number): Promise<InProcessResult> {
  const out: string[] = [];
  const err: string[] = [];
  const saved = { exit: process.exit, out: process.stdout.write, err: process.stderr.write, env: { ...process.env } };
  const stdoutListeners = process.stdout.listeners('error');
  const capture = (into: string[]) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      into.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      cb?.();
      return true;
    }) as typeof process.stdout.write;
  process.exit = ((code?: number) => {
    throw new Exited(code ?? 0);
  }) as typeof process.exit;
  process.stdout.write = capture(out);
  process.stderr.write = capture(err);
  Object.assign(process.env, env);
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await Promise.race([
      main(['node', 'mesh', ...args]).then(
        () => 0,
        (e: unknown) => {
          if (e instanceof Exited) return e.code;
          throw e;
        },
      ),
      new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs))),
    ]);
    return { code, stdout: lines(out), stderr: lines(err) };
  } finally {
    clearTimeout(timer);
    process.exit = saved.exit;
    process.stdout.write = saved.out;
    process.stderr.write = saved.err;
    for (const k of Object.keys(process.env)) if (!(k in saved.env)) delete process.env[k];
    Object.assign(process.env, saved.env);
    for (const l of process.stdout.listeners('error')) if (!stdoutListeners.includes(l)) process.stdout.off('error', l as () => void);
  }
}
