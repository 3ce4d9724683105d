/**
 * The resolver side of the scale bench, in a process of its own (forked by
 * bench-scale.ts with an IPC channel and --expose-gc): its RSS and heap are
 * the resolver's, and the churn writer in the parent does not share its
 * event loop. It builds EtcdResolver instances exactly as grpc-js would,
 * with a recording listener in place of a channel.
 *
 * Requests (parent → probe): {id, cmd: 'mem' | 'first-set' | 'watch' | 'collect' | 'stop', ...}.
 * Replies: {id, result} or {id, error}.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient } from '../core/etcd-client';
import { EtcdResolver, ETCD_CLIENT_OPTION, registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';
import { SUBSET_SIZE_OPTION } from '../balancer/subset';
import { epochNow } from './bench-report';
import { serveFleetCalls } from './scale-fleet-process';

type Endpoint = grpc.experimental.Endpoint;
type StatusOr<T> = grpc.experimental.StatusOr<T>;

export interface ProbeMem {
  /** Whether a GC was forced first (--expose-gc). */
  gc: boolean;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

export interface ProbeDelivery {
  /** epoch ms (performance.timeOrigin + now), comparable with the parent's. */
  t: number;
  size: number;
  /** Hosts (the scale set's endpoints differ by host) that appeared / disappeared. */
  added: string[];
  removed: string[];
}

export interface ProbeRequest {
  id: number;
  cmd: 'mem' | 'first-set' | 'watch' | 'collect' | 'stop';
  endpoints?: string[];
  /** `<prefix>/<service>` (no trailing slash). */
  path?: string;
  expected?: number;
}

function mem(): ProbeMem {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const m = process.memoryUsage();
  return { gc: gc !== undefined, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
}

/**
 * What the recording listener keys endpoints by: the host alone. Every
 * endpoint of the scale set has a distinct host (port 8080 throughout), and
 * reusing the resolver's host strings keeps the recording cheap: it runs in
 * the resolver's event loop and would otherwise inflate the lag it measures.
 */
const hostOf = (e: Endpoint) => (e.addresses[0] as { host: string }).host;

let seq = 0;

/** A resolver with a recording listener; `onSet` gets every endpoint list it hands over. */
function openResolver(client: Etcd3, path: string, onSet: (eps: Endpoint[]) => void): { resolver: EtcdResolver; name: string } {
  const name = `probe-${++seq}`;
  registerEtcdResolver(client, name);
  const uri = { scheme: 'etcd', authority: '', path } as grpc.experimental.GrpcUri;
  const resolver = new EtcdResolver(
    uri,
    (result: StatusOr<Endpoint[]>) => {
      if (result.ok) onSet(result.value);
      return true;
    },
    // The full set is what is measured: no subsetting (the default subsets over 100).
    { [ETCD_CLIENT_OPTION]: name, [SUBSET_SIZE_OPTION]: 0 },
  );
  resolver.updateResolution();
  return { resolver, name };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    );
  });
}

/** A new resolver on a new etcd client: time until it hands over its first set. */
async function firstSet(endpoints: string[], path: string): Promise<{ ms: number; count: number }> {
  const client = createEtcdClient({ endpoints });
  const t0 = performance.now();
  let open: ReturnType<typeof openResolver> | undefined;
  try {
    return await withTimeout(
      new Promise<{ ms: number; count: number }>((resolve) => {
        open = openResolver(client, path, (eps) => resolve({ ms: performance.now() - t0, count: eps.length }));
      }),
      30_000,
      'first set',
    );
  } finally {
    open?.resolver.destroy();
    if (open) unregisterEtcdClient(open.name);
    client.close();
  }
}

let live:
  | { client: Etcd3; resolver: EtcdResolver; name: string; deliveries: ProbeDelivery[]; current: Set<string>; cpu0: NodeJS.CpuUsage; loop: IntervalHistogram; recordMs: number }
  | undefined;

async function watch(endpoints: string[], path: string): Promise<{ firstSetMs: number; count: number; before: ProbeMem; after: ProbeMem }> {
  const client = createEtcdClient({ endpoints });
  const before = mem();
  const t0 = performance.now();
  const deliveries: ProbeDelivery[] = [];
  let current = new Set<string>();
  let resolveFirst: (v: { ms: number; count: number }) => void = () => undefined;
  const first = new Promise<{ ms: number; count: number }>((r) => (resolveFirst = r));
  const open = openResolver(client, path, (eps) => {
    const t = epochNow();
    const c0 = performance.now();
    const next = new Set<string>();
    for (const e of eps) next.add(hostOf(e));
    if (!live) {
      current = next;
      resolveFirst({ ms: performance.now() - t0, count: eps.length });
      return;
    }
    const added: string[] = [];
    const removed: string[] = [];
    for (const a of next) if (!live.current.has(a)) added.push(a);
    for (const a of live.current) if (!next.has(a)) removed.push(a);
    live.current = next;
    live.deliveries.push({ t, size: next.size, added, removed });
    live.recordMs += performance.now() - c0;
  });
  const f = await withTimeout(first, 30_000, 'first set');
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  live = { client, resolver: open.resolver, name: open.name, deliveries, current, cpu0: process.cpuUsage(), loop, recordMs: 0 };
  return { firstSetMs: f.ms, count: f.count, before, after: mem() };
}

function collect(): { deliveries: ProbeDelivery[]; mem: ProbeMem; cpuMs: number; recordMs: number; loopDelayMs: { p50: number; p99: number; max: number } } {
  if (!live) throw new Error('no live resolver');
  const deliveries = live.deliveries;
  live.deliveries = [];
  const cpu = process.cpuUsage(live.cpu0);
  live.loop.disable();
  const h = live.loop;
  // The histogram's samples include the 5 ms sampling interval itself.
  const d = (ns: number) => Math.max(0, ns / 1e6 - 5);
  const loopDelayMs = { p50: d(h.percentile(50)), p99: d(h.percentile(99)), max: d(h.max) };
  const recordMs = live.recordMs;
  live.recordMs = 0;
  return { deliveries, mem: mem(), cpuMs: (cpu.user + cpu.system) / 1000, recordMs, loopDelayMs };
}

async function handle(req: ProbeRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'mem':
      return mem();
    case 'first-set':
      return firstSet(req.endpoints!, req.path!);
    case 'watch':
      return watch(req.endpoints!, req.path!);
    case 'collect':
      return collect();
    case 'stop':
      if (live) {
        live.resolver.destroy();
        unregisterEtcdClient(live.name);
        live.client.close();
        live = undefined;
      }
      setTimeout(() => process.exit(0), 10);
      return 'bye';
  }
}

serveFleetCalls(handle);
