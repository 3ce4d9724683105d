import { readFileSync } from 'node:fs';
import { MeshProcess, type LogLine } from '../demo/mesh-process';
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
  rounds: Array<{ onRps: number; offRps: number; ratio: number; onCpuMsPerCall: number; offCpuMsPerCall: number; cpuRatio: number }>;
  /** Median over rounds of (rps with --metrics / rps without), the two measured side by side. */
  rpsRatioMedian: number;
  /**
   * Median over rounds of (CPU per OK call without metrics / with), CPU of
   * the load process and its 3 greeters over the measured window: the
   * throughput ratio of a CPU-bound mesh, which the scheduler's uneven split
   * of 2 shared cores between the two sides does not distort.
   */
  cpuRatioMedian: number;
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
    const sets: Record<string, MeshProcess[]> = { 'metrics-on': [], 'metrics-off': [] };
    const start = async (service: string, metrics: boolean) => {
      const args = ['server', '--port', String(await freePort()), '--etcd', o.etcd, '--prefix', o.prefix, '--service', service, ...(metrics ? ['--metrics', '127.0.0.1:0'] : [])];
      const p = new MeshProcess(args, {}, { stdout: 'ignore' });
      servers.push(p);
      sets[service].push(p);
      await p.waitForLog('server.state', { to: 'SERVING' });
    };
    await Promise.all([0, 1, 2].flatMap(() => [start('metrics-on', true), start('metrics-off', false)]));
    const rounds: MetricsOverheadResult['rounds'] = [];
    let failed = 0;
    for (let i = 0; i < o.rounds; i++) {
      const load = (service: string, metrics: boolean) => {
        const args = ['load', '--etcd', o.etcd, '--prefix', o.prefix, '--service', service, '--concurrency', String(o.concurrency), '--warmup', `${o.warmMs}ms`, '--duration', `${o.runMs}ms`, '--json', ...(metrics ? ['--metrics', '127.0.0.1:0'] : [])];
        // CPU of the load and its greeters, read as the load logs the start and the end of its measured window.
        const marks: number[] = [];
        const onLog = (l: LogLine) => {
          if (l.event === 'load.phase' && (l.to === 'measuring' || l.to === 'done')) marks.push(cpuMs(p.pid) + sets[service].reduce((a, s) => a + cpuMs(s.pid), 0));
        };
        const p: MeshProcess = new MeshProcess(args, {}, { onLog });
        return p.exited.then(({ code }) => {
          if (code !== 0) throw new Error(`mesh load (${service}) exited ${code}: ${p.stderr.slice(-3).join(' | ')}`);
          const r = JSON.parse(p.stdout[p.stdout.length - 1]) as { rps: number; ok: number; failed: number };
          if (marks.length !== 2) throw new Error(`mesh load (${service}) logged no measured window`);
          return { ...r, cpuMsPerCall: (marks[1] - marks[0]) / Math.max(1, r.ok) };
        });
      };
      const [on, off] = await Promise.all([load('metrics-on', true), load('metrics-off', false)]);
      failed += on.failed + off.failed;
      const cpuRatio = round(off.cpuMsPerCall / on.cpuMsPerCall, 4);
      rounds.push({ onRps: on.rps, offRps: off.rps, ratio: round(on.rps / off.rps, 4), onCpuMsPerCall: round(on.cpuMsPerCall, 4), offCpuMsPerCall: round(off.cpuMsPerCall, 4), cpuRatio });
      progress(`  round ${i + 1}/${o.rounds}: rps on ${on.rps} / off ${off.rps} = ${round(on.rps / off.rps, 3)}; CPU ms per call on ${round(on.cpuMsPerCall, 3)} / off ${round(off.cpuMsPerCall, 3)}: throughput ratio ${round(cpuRatio, 3)}`);
    }
    return {
      rounds,
      rpsRatioMedian: round(median(rounds.map((r) => r.ratio)), 4),
      cpuRatioMedian: round(median(rounds.map((r) => r.cpuRatio)), 4),
      onRps: round(median(rounds.map((r) => r.onRps)), 0),
      offRps: round(median(rounds.map((r) => r.offRps)), 0),
      failed,
    };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    process.off('exit', exitHook);
  }
}

/** utime + stime of a live process, ms (Linux /proc; clock ticks of 10 ms, so windows of seconds). 0 once it is gone. */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of proc(5); f[0] is field 3.
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}
