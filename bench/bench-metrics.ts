import { MeshProcess } from '../demo/mesh-process';
import { freePort } from '../demo/free-port';
import { median, round } from './bench-report';

export interface MetricsOverheadOptions {
  etcd: string;
  prefix: string;
  rounds: number;
  runMs: number;
  warmMs: number;
  concurrency: number;
}

export interface MetricsOverheadResult {
  rounds: Array<{ onRps: number; offRps: number; ratio: number }>;
  /** Median over rounds of (rps with --metrics / rps without), the two measured side by side. */
  rpsRatioMedian: number;
  onRps: number;
  offRps: number;
  failed: number;
}

/**
 * Throughput with metrics on vs off, end to end: two sets of 3 greeters
 * (one set with `--metrics`, counting server metrics), each loaded by its
 * own `mesh load` process (one with `--metrics`: client, picker, resolver
 * metrics; one without) at the same time, same concurrency and window, so
 * machine noise falls on both sides alike. Each round spawns fresh load
 * processes; the ratio is the median over rounds.
 */
export async function benchMetrics(o: MetricsOverheadOptions, progress: (s: string) => void): Promise<MetricsOverheadResult> {
  const servers: MeshProcess[] = [];
  const exitHook = () => MeshProcess.killAllNow();
  process.on('exit', exitHook);
  try {
    const start = async (service: string, metrics: boolean) => {
      const args = ['server', '--port', String(await freePort()), '--etcd', o.etcd, '--prefix', o.prefix, '--service', service, ...(metrics ? ['--metrics', '127.0.0.1:0'] : [])];
      const p = new MeshProcess(args, {}, { stdout: 'ignore' });
      servers.push(p);
      await p.waitForLog('server.state', { to: 'SERVING' });
    };
    await Promise.all([0, 1, 2].flatMap(() => [start('metrics-on', true), start('metrics-off', false)]));
    const rounds: MetricsOverheadResult['rounds'] = [];
    let failed = 0;
    for (let i = 0; i < o.rounds; i++) {
      const load = (service: string, metrics: boolean) => {
        const args = ['load', '--etcd', o.etcd, '--prefix', o.prefix, '--service', service, '--concurrency', String(o.concurrency), '--warmup', `${o.warmMs}ms`, '--duration', `${o.runMs}ms`, '--json', ...(metrics ? ['--metrics', '127.0.0.1:0'] : [])];
        const p = new MeshProcess(args);
        return p.exited.then(({ code }) => {
          if (code !== 0) throw new Error(`mesh load (${service}) exited ${code}: ${p.stderr.slice(-3).join(' | ')}`);
          return JSON.parse(p.stdout[p.stdout.length - 1]) as { rps: number; failed: number };
        });
      };
      const [on, off] = await Promise.all([load('metrics-on', true), load('metrics-off', false)]);
      failed += on.failed + off.failed;
      rounds.push({ onRps: on.rps, offRps: off.rps, ratio: round(on.rps / off.rps, 4) });
      progress(`  round ${i + 1}/${o.rounds}: metrics on ${on.rps} rps, off ${off.rps} rps, ratio ${round(on.rps / off.rps, 3)}`);
    }
    return {
      rounds,
      rpsRatioMedian: round(median(rounds.map((r) => r.ratio)), 4),
      onRps: round(median(rounds.map((r) => r.onRps)), 0),
      offRps: round(median(rounds.map((r) => r.offRps)), 0),
      failed,
    };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    process.off('exit', exitHook);
  }
}
