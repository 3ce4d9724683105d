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
  /** Calls in flight per side in the closed-loop rounds. */
  concurrency: number;
}

export interface MetricsRound {
  onRps: number;
  offRps: number;
  ratio: number;
  onCpuMsPerCall: number;
  offCpuMsPerCall: number;
  cpuRatio: number;
}

export interface MetricsOverheadResult {
  /** Closed loop at `concurrency` per side: rps as the scheduler let each side run. */
  rounds: MetricsRound[];
  /** Open loop, both sides at `rate` calls/s: CPU per call at equal work. */
  openRounds: MetricsRound[];
  /** The open-loop rate per side: half the slower side's closed-loop rps (median), so neither side falls behind. */
  rate: number;
  /** Median over closed rounds of (rps with --metrics / rps without), the two measured side by side. */
  rpsRatioMedian: number;
  /**
   * Median over open-loop rounds of (CPU per OK call without metrics /
   * with), CPU of the load process and its 3 greeters over the measured
   * window, both sides at the same call rate: the throughput ratio of a
   * CPU-bound mesh. Closed loop cannot give it: a side the scheduler slows
   * down runs fewer calls per HTTP/2 write and so spends more CPU per call.
   */
  cpuRatioMedian: number;
  /** The same ratio from the closed-loop rounds (biased by the rate each side got). */
  closedCpuRatioMedian: number;
  onRps: number;
  offRps: number;
  failed: number;
}

/**
 * Metrics on vs off, end to end: two sets of 3 greeters (one set with
 * `--metrics`, counting server metrics), each loaded by its own `mesh load`
 * process (one with `--metrics`: client, picker, resolver metrics; one
 * without) at the same time, same window, so machine noise falls on both
 * sides alike. First closed-loop rounds (rps side by side), then open-loop
 * rounds at one fixed rate (CPU per call at equal work). Each round spawns
 * fresh load processes; ratios are medians over rounds.
 */
export async function benchMetrics(o: MetricsOverheadOptions, progress: (s: string) => void): Promise<MetricsOverheadResult> {
  // Every child here is a tracked MeshProcess: the bench's exit hook (MeshProcess.killAllNow) covers them.
  const servers: MeshProcess[] = [];
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
    let failed = 0;
    const load = (service: string, metrics: boolean, rate: number | undefined) => {
      const pace = rate ? ['--rate', String(rate)] : ['--concurrency', String(o.concurrency)];
      const args = ['load', '--etcd', o.etcd, '--prefix', o.prefix, '--service', service, ...pace, '--warmup', `${o.warmMs}ms`, '--duration', `${o.runMs}ms`, '--json', ...(metrics ? ['--metrics', '127.0.0.1:0'] : [])];
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
    const measure = async (rate: number | undefined, label: string): Promise<MetricsRound[]> => {
      const out: MetricsRound[] = [];
      for (let i = 0; i < o.rounds; i++) {
        const [on, off] = await Promise.all([load('metrics-on', true, rate), load('metrics-off', false, rate)]);
        failed += on.failed + off.failed;
        const r: MetricsRound = { onRps: on.rps, offRps: off.rps, ratio: round(on.rps / off.rps, 4), onCpuMsPerCall: round(on.cpuMsPerCall, 4), offCpuMsPerCall: round(off.cpuMsPerCall, 4), cpuRatio: round(off.cpuMsPerCall / on.cpuMsPerCall, 4) };
        out.push(r);
        progress(`  ${label} round ${i + 1}/${o.rounds}: rps on ${on.rps} / off ${off.rps} = ${round(r.ratio, 3)}; CPU ms per call on ${round(on.cpuMsPerCall, 3)} / off ${round(off.cpuMsPerCall, 3)}: ratio ${round(r.cpuRatio, 3)}`);
      }
      return out;
    };
    const rounds = await measure(undefined, `closed loop (concurrency ${o.concurrency} each)`);
    const onRps = round(median(rounds.map((r) => r.onRps)), 0);
    const offRps = round(median(rounds.map((r) => r.offRps)), 0);
    const rate = Math.max(50, Math.round(Math.min(onRps, offRps) / 2 / 50) * 50);
    const openRounds = await measure(rate, `open loop (${rate}/s each)`);
    return {
      rounds,
      openRounds,
      rate,
      rpsRatioMedian: round(median(rounds.map((r) => r.ratio)), 4),
      cpuRatioMedian: round(median(openRounds.map((r) => r.cpuRatio)), 4),
      closedCpuRatioMedian: round(median(rounds.map((r) => r.cpuRatio)), 4),
      onRps,
      offRps,
      failed,
    };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
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
