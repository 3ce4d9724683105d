import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { MeshProcess } from '../demo/mesh-process';
import type { FleetCall } from './scale-fleet';

/** A request to a fleet process: `cmd` names what to do; the reply carries the same `id`. */
export type FleetRequestBase = { id: number; cmd: string };

/**
 * A forked bench child (scale-fleet.js by default; scale-probe.js,
 * scale-wide-*.js), driven over IPC: {id, cmd, ...} → {id, result | error}.
 * The process itself is the shared MeshProcess (node with an IPC channel,
 * its output where the bench's goes), tracked until it exits, so
 * MeshProcess.killAllNow() ends every one; this class holds only the
 * request/reply protocol.
 */
export class FleetProcess {
  private readonly mesh: MeshProcess;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(script = 'scale-fleet.js', opts: { execArgv?: string[]; logLevel?: string } = {}) {
    // Run from dist/bench (the bench) or from the TypeScript source (vitest): the child is always the built one.
    const built = path.join(__dirname, script);
    const file = existsSync(built) ? built : path.resolve(__dirname, '../dist/bench', script);
    // The bench's own log format (not MeshProcess's JSON): the children's few lines go to the bench's stderr as they are.
    const env = { MESH_LOG_FORMAT: process.env.MESH_LOG_FORMAT, MESH_LOG_LEVEL: process.env.MESH_FLEET_LOG_LEVEL ?? opts.logLevel ?? 'error' };
    this.mesh = new MeshProcess([...(opts.execArgv ?? process.execArgv), file], env, { command: process.execPath, stdout: 'inherit', stderr: 'inherit', ipc: true });
    this.mesh.proc.on('message', (m: { id: number; result?: unknown; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error !== undefined) p.reject(new Error(`fleet process: ${m.error}`));
      else p.resolve(m.result);
    });
    this.mesh.proc.once('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error('fleet process exited'));
      this.pending.clear();
    });
  }

  call<T>(req: FleetCall | { cmd: string; [k: string]: unknown }, timeoutMs = 60_000): Promise<T> {
    const id = ++this.nextId;
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`fleet process: ${req.cmd} timed out`));
      }, timeoutMs);
      this.pending.set(id, { resolve: (v) => (clearTimeout(t), resolve(v as T)), reject: (e) => (clearTimeout(t), reject(e)) });
      this.mesh.proc.send({ ...req, id });
    });
  }

  /** Ask it to stop (it closes what it holds, replies, and exits); SIGKILL if it has not exited 3 s after that. */
  async stop(): Promise<void> {
    await this.call({ cmd: 'stop' }, 6_000).catch(() => undefined);
    const t = setTimeout(() => this.mesh.kill('SIGKILL'), 3_000);
    await this.mesh.exited;
    clearTimeout(t);
  }
}

/**
 * The child's end: answer every request with `handle`'s result (or its
 * error, as a string), and exit when the parent goes (the IPC channel
 * closes), so no fleet process outlives the bench.
 */
export function serveFleetCalls<R extends FleetRequestBase>(handle: (req: R) => Promise<unknown>): void {
  process.on('message', (req: R) => {
    handle(req).then(
      (result) => process.send!({ id: req.id, result }),
      (err: unknown) => process.send!({ id: req.id, error: String(err) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
