import * as path from 'node:path';
import { REPO } from './mesh-process';
import { peerProcess } from './peer-process';
import type { MeshProcess } from '../../demo/mesh-process';
import { DEBIAN_PYTHON } from './peer-python';
import { waitFor } from './ports';

/**
 * The two xDS clients we did not write, run as child processes with the same
 * command line and the same JSON lines (test/peers/xds_client.py on gRPC's
 * C core, test/peers/xds-client-node.js on grpc-js + @grpc/grpc-js-xds):
 * calls at a steady rate through `xds:///<service>`, counted per backend in
 * 200 ms windows.
 */

export type XdsClientKind = 'c-core' | 'grpc-js-xds';
export const XDS_CLIENT_KINDS: readonly XdsClientKind[] = ['c-core', 'grpc-js-xds'];

/** One 200 ms window: calls answered per backend and failed per code, ending at `t` (epoch ms). */
export interface XdsTick {
  t: number;
  ok: Record<string, number>;
  failed: Record<string, number>;
}

export interface XdsClientOptions {
  /** Calls a second in total (default 100). */
  rate?: number;
  concurrency?: number;
  /** Each call's deadline (default 1000 ms). */
  deadlineMs?: number;
  env?: Record<string, string>;
}

const WINDOW_MS = 200;

export class XdsClientPeer {
  private constructor(
    readonly kind: XdsClientKind,
    readonly proc: MeshProcess,
  ) {}

  static async start(kind: XdsClientKind, target: string, bootstrapFile: string, opts: XdsClientOptions = {}): Promise<XdsClientPeer> {
    const args = [target, String(opts.rate ?? 100), String(opts.concurrency ?? 4), String(opts.deadlineMs ?? 1000)];
    const env = { GRPC_XDS_BOOTSTRAP: bootstrapFile, ...opts.env };
    const proc =
      kind === 'c-core'
        ? peerProcess(DEBIAN_PYTHON, ['-u', path.join(REPO, 'test', 'peers', 'xds_client.py'), ...args], env)
        : peerProcess(process.execPath, [path.join(REPO, 'test', 'peers', 'xds-client-node.js'), ...args], env);
    await proc.waitForLog('started');
    return new XdsClientPeer(kind, proc);
  }

  get ticks(): XdsTick[] {
    return this.proc.logsNamed('tick') as unknown as XdsTick[];
  }

  /** Epoch ms of the first reply from `backend`, if any. */
  firstAt(backend: string): number | undefined {
    const e = this.proc.logsNamed('first').find((f) => f.backend === backend);
    return e ? Number(e.t) : undefined;
  }

  /** Wait until every one of `backends` has answered at least once; resolves with the epoch ms of each first reply. */
  async waitForBackends(backends: string[], timeoutMs = 15_000): Promise<number[]> {
    try {
      return await waitFor(`${this.kind}: replies from ${backends.join(', ')}`, () => {
        const at = backends.map((b) => this.firstAt(b));
        return at.every((t) => t !== undefined) ? (at as number[]) : undefined;
      }, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message} (answered: ${Object.keys(this.totals(0)).join(', ') || 'none'}; errors: ${this.errors().slice(-2).join('; ') || 'none'}; exit ${this.proc.exitCode}; stderr ${this.proc.stderr.slice(-3).join(' | ')})`);
    }
  }

  /** Calls answered per backend in windows ending within (fromMs, toMs]. */
  totals(fromMs: number, toMs = Infinity): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of this.ticks) if (t.t > fromMs && t.t <= toMs) for (const [b, n] of Object.entries(t.ok)) out[b] = (out[b] ?? 0) + n;
    return out;
  }

  /** Failed calls in windows ending within (fromMs, toMs]. */
  failed(fromMs = 0, toMs = Infinity): number {
    let n = 0;
    for (const t of this.ticks) if (t.t > fromMs && t.t <= toMs) for (const c of Object.values(t.failed)) n += c;
    return n;
  }

  /** End (epoch ms) of the last window in which `backend` answered a call; 0 if never. */
  lastCallTo(backend: string): number {
    let last = 0;
    for (const t of this.ticks) if ((t.ok[backend] ?? 0) > 0) last = t.t;
    return last;
  }

  /** Share of calls per backend in (fromMs, toMs]. */
  shares(fromMs: number, toMs = Infinity): Record<string, number> {
    const tot = this.totals(fromMs, toMs);
    const sum = Object.values(tot).reduce((a, b) => a + b, 0);
    return Object.fromEntries(Object.entries(tot).map(([b, n]) => [b, sum ? n / sum : 0]));
  }

  /** The first errors the client printed (code and details). */
  errors(): string[] {
    return this.proc.logsNamed('error').map((e) => `${String(e.code)}: ${String(e.details)}`);
  }

  /** Wait for the next window to be printed, so counts up to now are in. */
  async flush(): Promise<void> {
    const n = this.ticks.length;
    await waitFor(`${this.kind}: a tick`, () => (this.ticks.length > n + 1 ? true : undefined), 5_000, 20);
  }

  stop(): Promise<void> {
    return this.proc.stop();
  }
}

export { WINDOW_MS };
