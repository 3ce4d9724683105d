import { freePort } from '../demo/free-port';
import { MeshProcess, type LogLine } from '../demo/mesh-process';

export interface ServerOptions {
  etcd: string;
  prefix: string;
  service: string;
  /** false: `--no-register` (the bench writes the key itself). */
  register: boolean;
}

/** A `mesh server` the bench started: its address, and the shared MeshProcess running it (signals, logs, exit). */
export interface BenchServer {
  readonly addr: string;
  readonly mesh: MeshProcess;
}

/**
 * Spawn a `mesh server` on a free loopback port; resolves once it is
 * SERVING (and registered unless `register` is false). It is tracked like
 * every child (MeshProcess.stopAll and killAllNow end them all, so the bench
 * leaves nothing behind, even on Ctrl-C). An exit the bench did not cause
 * (no signal of its own) is reported: the figures after it are not valid.
 */
export async function startServer(opts: ServerOptions): Promise<BenchServer> {
  const addr = `127.0.0.1:${await freePort()}`;
  const args = ['server', '--port', addr.split(':')[1], '--etcd', opts.etcd, '--prefix', opts.prefix, '--service', opts.service];
  if (!opts.register) args.push('--no-register');
  const mesh = new MeshProcess(args, {}, { stdout: 'ignore' });
  void mesh.exited.then((r) => {
    if (mesh.signalled) return;
    const drain = mesh.logs.find((l) => l.event === 'server.state' && l.to === 'DRAINING');
    process.stderr.write(`bench: server ${addr} (pid ${mesh.proc.pid}) exited on its own: code ${r.code}, signal ${r.signal}${drain ? `, ${String(drain.reason)}` : ''}; the figures after this point are not valid\n`);
  });
  await waitForServerLog({ addr, mesh }, (l) => l.event === 'server.state' && l.to === 'SERVING', 30_000);
  return { addr, mesh };
}

/** A log line of the server's (polled every 10 ms: the bench times what follows). */
export function waitForServerLog(s: BenchServer, pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
  return s.mesh.waitForLogLine(pred, timeoutMs, `server ${s.addr} log`, 10);
}

/** Start `n` servers concurrently (a few at a time, so start-up does not starve the machine). */
export async function startServers(n: number, opts: ServerOptions, parallel = 4): Promise<BenchServer[]> {
  const out: BenchServer[] = [];
  for (let i = 0; i < n; i += parallel) {
    const batch = await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, () => startServer(opts)));
    out.push(...batch);
  }
  return out;
}

/** SIGTERM each (SIGKILL after 5 s); resolves once all exited. */
export async function stopServers(servers: BenchServer[]): Promise<void> {
  await Promise.all(servers.map((s) => s.mesh.stop()));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
