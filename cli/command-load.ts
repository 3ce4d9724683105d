import { Command, Option } from 'commander';
import { intIn, parseLb, parsePositiveDuration, parseTarget } from './parse';
import { DEFAULT_LB } from '../balancer/channel';
import { addMeshClientOptions, openMeshClient, type MeshClientFlags } from './mesh-client';
import { serveMetrics, type MetricsFlags } from './metrics-flag';
import { runLoad, type LoadReport } from '../services/load-generator';
import { TrafficView } from '../services/traffic-view';
import { addLoadModeOptions, type LoadModeFlags } from './load-flags';
import { ResolverMarkers } from '../services/load-markers';
import { headline, writeReportCsv, writeReportHtml, type ReportInput } from '../services/load-report';
import type { LoadTick } from '../services/load-generator';
import { componentLogger } from '../core/logger';

/**
 * How long the process may take to end by itself once the figures are out.
 * Under overload a greeter's HTTP/2 session was seen to stop reading its
 * connection for good (its socket in CLOSE-WAIT with bytes unread, calls on
 * it timing out): our closed end of that connection then never finishes
 * closing, and would keep `mesh load` running forever after its summary.
 */
const EXIT_GRACE_MS = 2_000;

interface LoadFlags extends MeshClientFlags, LoadModeFlags, MetricsFlags {
  concurrency: number;
  duration: number;
  deadline: number;
  json: boolean;
  name: string;
}

export function loadCommand(): Command {
  const cmd = new Command('load')
    .description('SayHello load through the etcd resolver (or --target): closed loop (--concurrency) or open loop (--rate); live per-backend view, then a summary')
    .addOption(new Option('--concurrency <n>', 'calls in flight').default(16).argParser(intIn(1, 10_000)))
    .addOption(new Option('--duration <duration>', 'how long to measure (after --warmup)').default(10_000, '10s').argParser(parsePositiveDuration))
    .addOption(new Option('--deadline <duration>', 'deadline of each call, retries and hedges included').default(1000, '1s').argParser(parsePositiveDuration))
    .addOption(new Option('--target <target>', 'any grpc-js target (e.g. ipv4:127.0.0.1:50051,127.0.0.1:50052) instead of the etcd resolver').argParser(parseTarget))
    .addOption(new Option('--name <name>', 'name sent in each request').default('load'))
    .addOption(new Option('--lb <policy>', 'load-balancing policy: load_aware (slow or failing backends get little traffic; weights honoured), round_robin, pick_first or outlier_detection (grpc-js\'s, around round_robin)').default(DEFAULT_LB).argParser(parseLb))
    .option('--json', 'print one JSON summary object as the last stdout line', false);
  addLoadModeOptions(cmd);
  addMeshClientOptions(cmd);
  return cmd.action(async (flags: LoadFlags) => {
    // Before the channel: it takes the client-metrics interceptor when built.
    const served = await serveMetrics(flags);
    const mesh = await openMeshClient(flags);
    const { greeter: client, etcd, target } = mesh;
    const view = flags.json ? undefined : new TrafficView();
    const abort = new AbortController();
    process.on('SIGINT', () => abort.abort());
    process.on('SIGTERM', () => abort.abort());
    // With --total alone the count ends the run, not the default duration.
    const durationMs = flags.total !== undefined && cmd.getOptionValueSource('duration') === 'default' ? Infinity : flags.duration;
    const wantReport = Boolean(flags.report || flags.csv);
    const markers = etcd && mesh.registry && wantReport ? new ResolverMarkers(etcd, mesh.registry) : undefined;
    const ticks: LoadTick[] = [];
    let notSent: ReportInput['notSent'];
    markers?.setOrigin(performance.now());
    const report = await runLoad({
      client,
      concurrency: flags.concurrency,
      rate: flags.rate,
      total: flags.total,
      warmupMs: flags.warmup,
      durationMs,
      deadlineMs: flags.deadline,
      name: flags.name,
      signal: abort.signal,
      onTick: (t) => {
        if (wantReport) ticks.push(t);
        view?.render(t);
      },
      onNotSent: (perSecond) => (notSent = perSecond),
    });
    markers?.close();
    mesh.close();
    await served?.http.close();
    const input: ReportInput = { title: `mesh load on ${target}`, summary: report, ticks, markers: markers?.markers ?? [], command: `mesh ${process.argv.slice(2).join(' ')}`, notSent };
    if (flags.report) writeReportHtml(flags.report, input);
    if (flags.csv) writeReportCsv(flags.csv, input);
    if (flags.json) process.stdout.write(`${JSON.stringify(report)}\n`);
    else printSummary(report);
    // Some failures are figures to report; no success at all is a failed run.
    if (report.ok === 0 && report.failed > 0) {
      process.stderr.write(`mesh: no call succeeded (${Object.entries(report.errors).map(([c, n]) => `${c} ${n}`).join(', ')}); are backends registered under ${flags.target ?? `${flags.prefix}/${flags.service}/`}?\n`);
      process.exitCode = 1;
    }
    setTimeout(() => {
      componentLogger('load').warn({ event: 'load.exit_forced', graceMs: EXIT_GRACE_MS, holding: process.getActiveResourcesInfo() }, `still running ${EXIT_GRACE_MS} ms after the summary (a connection a backend never closed?): exiting`);
      process.exit();
    }, EXIT_GRACE_MS).unref();
  });
}

function printSummary(r: LoadReport): void {
  const lines = [
    '',
    headline(r),
    `requests ${r.requests}  ok ${r.ok}  failed ${r.failed}  ${r.rps} rps over ${r.durationS}s`,
    `latency ms  p50 ${r.latencyMs.p50}  p90 ${r.latencyMs.p90}  p99 ${r.latencyMs.p99}  p99.9 ${r.latencyMs['p99.9']}  max ${r.latencyMs.max}${r.mode === 'open' ? '  (from each intended start)' : ''}`,
    ...(r.schedule ? [r.schedule.kept ? `schedule ${r.schedule.rate} calls/s kept (at most ${r.schedule.behindMaxMs} ms behind)` : `schedule ${r.schedule.rate} calls/s NOT kept: the client fell up to ${r.schedule.behindMaxMs} ms behind; ${r.schedule.missed} of ${r.schedule.intended} calls never sent`] : []),
    'backends:',
    ...Object.entries(r.backends)
      .sort()
      .map(([b, n]) => `  ${b.padEnd(22)} ${String(n).padStart(8)}  ${((100 * n) / Math.max(1, r.ok)).toFixed(1)}%`),
  ];
  if (Object.keys(r.errors).length) lines.push('errors:', ...Object.entries(r.errors).map(([c, n]) => `  ${c} ${n}`));
  process.stdout.write(lines.join('\n') + '\n');
}
