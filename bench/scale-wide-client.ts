/**
 * One mesh client in a process of its own (forked by bench/scale-wide.ts),
 * so its RSS and CPU are the client's: the same channel helper a user's
 * client gets (openGreeterClient: etcd resolver, load_aware, hedging), over
 * `etcd:///<prefix>/<service>`, optionally with deterministic subsetting.
 *
 * Request: {id, cmd: 'run', endpoints, target, subset?, concurrency, warmMs, durationMs, idleMs}.
 */
import { createEtcdClient } from '../core/etcd-client';
import { openGreeterClient, sayHello } from '../services/greeter-client';
import { SUBSET_SIZE_OPTION, CLIENT_ID_OPTION } from '../balancer/subset';
import { serveFleetCalls } from './scale-fleet-process';

export interface WideClientResult {
  /** Process start of the client (etcd client + channel created) → first successful call. */
  firstCallMs: number;
  ok: number;
  failed: number;
  rps: number;
  /** RSS right after the run and after the idle spell; CPU while idle (ms per s). */
  rssMB: number;
  idleRssMB: number;
  idleCpuMsPerS: number;
}

async function run(r: { endpoints: string[]; target: string; subset?: number; concurrency: number; warmMs: number; durationMs: number; idleMs: number }): Promise<WideClientResult> {
  const t0 = performance.now();
  const etcd = createEtcdClient({ endpoints: r.endpoints });
  const c = openGreeterClient(r.target, etcd, { name: 'wide', options: { [CLIENT_ID_OPTION]: 0, ...(r.subset !== undefined ? { [SUBSET_SIZE_OPTION]: r.subset } : {}) } });
  try {
    let firstCallMs = NaN;
    for (let i = 0; i < 200 && Number.isNaN(firstCallMs); i++) {
      try {
        await sayHello(c.greeter, 'first', 1_000);
        firstCallMs = performance.now() - t0;
      } catch {
        /* not ready yet: try again (bounded) */
      }
    }
    const loop = async (untilMs: number, counts: { ok: number; failed: number }) => {
      const worker = async () => {
        while (performance.now() < untilMs) {
          try {
            await sayHello(c.greeter, 'load', 1_000);
            counts.ok++;
          } catch {
            counts.failed++;
          }
        }
      };
      await Promise.all(Array.from({ length: r.concurrency }, worker));
    };
    await loop(performance.now() + r.warmMs, { ok: 0, failed: 0 });
    const counts = { ok: 0, failed: 0 };
    const s = performance.now();
    await loop(s + r.durationMs, counts);
    const secs = (performance.now() - s) / 1000;
    const rssMB = process.memoryUsage().rss / 2 ** 20;
    const cpu0 = process.cpuUsage();
    const i0 = performance.now();
    await new Promise((res) => setTimeout(res, r.idleMs));
    const cpu = process.cpuUsage(cpu0);
    const idleCpuMsPerS = (cpu.user + cpu.system) / 1000 / ((performance.now() - i0) / 1000);
    return { firstCallMs, ok: counts.ok, failed: counts.failed, rps: counts.ok / secs, rssMB, idleRssMB: process.memoryUsage().rss / 2 ** 20, idleCpuMsPerS };
  } finally {
    c.close();
    etcd.close();
  }
}

serveFleetCalls((req) => (req.cmd === 'run' ? run(req as unknown as Parameters<typeof run>[0]) : Promise.resolve(setTimeout(() => process.exit(0), 10) && 'bye')));
