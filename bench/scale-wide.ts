import type { WideClientResult } from './scale-wide-client';
import { FleetProcess } from './scale-fleet-process';
import { MeshProcess } from '../demo/mesh-process';
import { median, round } from './bench-report';

export interface WideOptions {
  endpoints: string[];
  prefix: string;
  /** Backends of the wide service (1 000 in the issue) and of the narrow one (3). */
  wide: number;
  narrow: number;
  concurrency: number;
  warmMs: number;
  durationMs: number;
  idleMs: number;
  /** Rounds of (narrow, wide by default, wide with --subset 0), each run in a fresh client process. */
  rounds: number;
  /** The grpc-go anchor (test/peers/go/wide-client): run over the same narrow and wide services in every round. */
  goClient?: string;
}

export interface WideVariant {
  backends: number;
  /** `--subset` given (0: a full mesh); undefined: the default (auto: every backend up to 100, 20 above). */
  subset?: number;
  firstCallMs: number[];
  rps: number[];
  failed: number;
  rssMB: number;
  idleRssMB: number;
  idleCpuMsPerS: number;
  /** Client connections that carried a call in the last run (the server's count): the backends really used. */
  connections: number;
}

export interface WideResult {
  narrow: WideVariant;
  /** The wide service with the client's defaults (over 1,000 backends: a subset of AUTO_SUBSET_SIZE). */
  wide: WideVariant;
  /** The wide service with `--subset 0`: a connection to every backend. */
  wideFull: WideVariant;
  /** median rps wide / narrow, and wide with --subset 0 / narrow. */
  ratio: number;
  fullRatio: number;
  /** The same two services through a grpc-go client (etcd's naming resolver, round_robin: every backend), if it ran. */
  go?: { narrow: WideVariant; wide: WideVariant; ratio: number };
}

/** One run of the grpc-go client (test/peers/go/wide-client), as a WideClientResult. */
async function runGoClient(binary: string, o: WideOptions, target: string): Promise<WideClientResult> {
  const args = ['-etcd', o.endpoints.join(','), '-target', target, '-concurrency', String(o.concurrency), '-warm', `${o.warmMs}ms`, '-duration', `${o.durationMs}ms`, '-idle', `${o.idleMs}ms`];
  const p = new MeshProcess(args, {}, { command: binary, logsFrom: 'stdout', stderr: 'inherit' });
  const t = setTimeout(() => p.kill('SIGKILL'), o.warmMs + o.durationMs + o.idleMs + 60_000);
  const { code } = await p.exited;
  clearTimeout(t);
  const done = p.logsNamed('done').pop();
  if (!done) throw new Error(`go wide client exited ${code} without a result: ${p.stdout.slice(-3).join(' | ')}`);
  return done as unknown as WideClientResult;
}

/**
 * Item 3: one client over N real greeter ports (one server process bound to
 * every port, each registered) against the same client over 3, alternated
 * in one run; each run a fresh client process (first call timed from its
 * start; RSS and idle CPU are the client's alone).
 */
export async function benchWide(o: WideOptions, progress: (s: string) => void): Promise<WideResult> {
  const server = new FleetProcess('scale-wide-server.js');
  try {
    const wideSvc = 'wide';
    const narrowSvc = 'narrow';
    await server.call({ cmd: 'start', endpoints: o.endpoints, prefix: o.prefix, service: wideSvc, count: o.wide }, 120_000);
    await server.call({ cmd: 'start', endpoints: o.endpoints, prefix: o.prefix, service: narrowSvc, count: o.narrow });
    progress(`  wide: one process listening on ${o.wide} + ${o.narrow} loopback ports, all registered`);
    const mk = (backends: number, subset?: number): WideVariant => ({ backends, subset, firstCallMs: [], rps: [], failed: 0, rssMB: 0, idleRssMB: 0, idleCpuMsPerS: 0, connections: 0 });
    const v = { narrow: mk(o.narrow), wide: mk(o.wide), wideFull: mk(o.wide, 0) };
    const go = o.goClient ? { narrow: mk(o.narrow), wide: mk(o.wide) } : undefined;
    const isGo = (x: WideVariant) => x === go?.narrow || x === go?.wide;
    const plan: Array<[WideVariant, string]> = [
      [v.narrow, narrowSvc],
      [v.wide, wideSvc],
      [v.wideFull, wideSvc],
      ...(go ? ([[go.narrow, narrowSvc], [go.wide, wideSvc]] as Array<[WideVariant, string]>) : []),
    ];
    for (let round_ = 0; round_ < o.rounds; round_++) {
      for (const [variant, svc] of round_ % 2 ? [...plan].reverse() : plan) {
        const client = isGo(variant) ? undefined : new FleetProcess('scale-wide-client.js');
        await server.call({ cmd: 'served' });
        try {
          const target = `etcd:///${o.prefix}/${svc}`;
          const r = client
            ? await client.call<WideClientResult>({ cmd: 'run', endpoints: o.endpoints, target, subset: variant.subset, concurrency: o.concurrency, warmMs: o.warmMs, durationMs: o.durationMs, idleMs: o.idleMs }, 120_000)
            : await runGoClient(o.goClient!, o, target);
          variant.firstCallMs.push(round(r.firstCallMs, 0));
          variant.rps.push(round(r.rps, 0));
          variant.failed += r.failed;
          // The last run's memory and idle CPU (one client process each; they barely vary).
          variant.rssMB = round(r.rssMB, 1);
          variant.idleRssMB = round(r.idleRssMB, 1);
          variant.idleCpuMsPerS = round(r.idleCpuMsPerS, 2);
          variant.connections = (await server.call<{ served: number; connections: number }>({ cmd: 'served' })).connections;
          progress(`  wide${client ? '' : ' (grpc-go)'}: ${variant.backends} backends${variant.subset !== undefined ? ` --subset ${variant.subset}` : ''}: first call ${round(r.firstCallMs, 0)} ms, ${round(r.rps, 0)} calls/s, ${r.failed} failed, ${variant.connections} connections carried calls, RSS ${round(r.rssMB, 1)} MB, idle CPU ${round(r.idleCpuMsPerS, 2)} ms/s`);
        } finally {
          await client?.stop();
        }
      }
    }
    return {
      ...v,
      ratio: round(median(v.wide.rps) / median(v.narrow.rps), 3),
      fullRatio: round(median(v.wideFull.rps) / median(v.narrow.rps), 3),
      go: go ? { ...go, ratio: round(median(go.wide.rps) / median(go.narrow.rps), 3) } : undefined,
    };
  } finally {
    await server.stop();
  }
}
