import type { ServiceError } from '@grpc/grpc-js';
import { status as grpcStatus } from '@grpc/grpc-js';
import { backendOf, sayHello, type GreeterClient } from './greeter-client';
import { componentLogger } from '../core/logger';

/** Figures of one load run; `--json` prints exactly this object. */
export interface LoadReport {
  requests: number;
  ok: number;
  failed: number;
  rps: number;
  durationS: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  backends: Record<string, number>;
  errors: Record<string, number>;
}

/** Per-second window handed to the live view. */
export interface LoadTick {
  second: number;
  ok: number;
  failed: number;
  backends: Record<string, number>;
  errors: Record<string, number>;
}

export interface LoadOptions {
  client: GreeterClient;
  concurrency: number;
  durationMs: number;
  /** Deadline of each call, hedged attempts included. */
  deadlineMs: number;
  name?: string;
  /** Called once per second with that second's counts. */
  onTick?: (tick: LoadTick) => void;
  /** Stop early (e.g. Ctrl-C); the report covers what ran. */
  signal?: AbortSignal;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return 0;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * Closed-loop load: `concurrency` workers, each sending its next call as
 * soon as the previous one ends, until the duration is over. Bounded in
 * time; a call that misses its deadline counts as failed under its status
 * code name (DEADLINE_EXCEEDED).
 */
export async function runLoad(opts: LoadOptions): Promise<LoadReport> {
  const name = opts.name ?? 'load';
  const log = componentLogger('load');
  let latencies = new Float64Array(1 << 16);
  let n = 0;
  let ok = 0;
  let failed = 0;
  const backends: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let window: LoadTick = { second: 1, ok: 0, failed: 0, backends: {}, errors: {} };
  const start = performance.now();
  const end = start + opts.durationMs;
  const ticker = setInterval(() => {
    const w = window;
    window = { second: w.second + 1, ok: 0, failed: 0, backends: {}, errors: {} };
    opts.onTick?.(w);
  }, 1000);

  const stopped = () => opts.signal?.aborted === true || performance.now() >= end;
  const worker = async () => {
    while (!stopped()) {
      const t0 = performance.now();
      try {
        const reply = await sayHello(opts.client, name, opts.deadlineMs);
        const ms = performance.now() - t0;
        if (n === latencies.length) {
          const bigger = new Float64Array(latencies.length * 2);
          bigger.set(latencies);
          latencies = bigger;
        }
        latencies[n++] = ms;
        ok++;
        window.ok++;
        const b = backendOf(reply);
        backends[b] = (backends[b] ?? 0) + 1;
        window.backends[b] = (window.backends[b] ?? 0) + 1;
      } catch (err) {
        // The first few failures are logged whole: the report only counts codes.
        if (failed < 5) log.warn({ event: 'load.call_failed', code: (err as ServiceError).code, details: (err as ServiceError).details ?? String(err) }, `call failed: ${String((err as Error).message ?? err).split('\n')[0]}`);
        failed++;
        window.failed++;
        const code = grpcStatus[(err as ServiceError).code ?? grpcStatus.UNKNOWN] ?? 'UNKNOWN';
        errors[code] = (errors[code] ?? 0) + 1;
        window.errors[code] = (window.errors[code] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  clearInterval(ticker);
  // The last partial second is not shown as a second of its own (it would
  // read as a drop in rate); the report below counts every call.
  const durationS = (performance.now() - start) / 1000;
  const sorted = latencies.subarray(0, n).sort();
  return {
    requests: ok + failed,
    ok,
    failed,
    rps: round((ok + failed) / durationS, 1),
    durationS: round(durationS),
    latencyMs: { p50: round(percentile(sorted, 50)), p90: round(percentile(sorted, 90)), p99: round(percentile(sorted, 99)), max: round(n ? sorted[n - 1] : 0) },
    backends,
    errors,
  };
}
