import { constants as osConstants } from 'node:os';
import { Command, Option } from 'commander';
import { addEtcdOptions, addServiceOptions, configuredEndpoints, connectEtcd, etcdConfigFromFlags, type EtcdFlags, type ServiceFlags } from './common';
import { intIn, parseLb, parseName, parsePositiveDuration } from './parse';
import { DEFAULT_LB, type LbPolicy } from '../balancer/channel';
import { Demo } from '../demo/demo';
import { addReportOptions } from './load-flags';
import { addFailureOptions, loadAwareOptionsOf } from './mesh-client';
import { writeReportCsv, writeReportHtml, type ReportInput } from '../services/load-report';
import { addMetricsOption, serveMetrics, type MetricsAddr, type MetricsFlags } from './metrics-flag';
import { DEFAULT_DASHBOARD_LISTEN, parseListen, warnIfExposed } from './command-dashboard';
import { addHealthCheckOptions, healthCheckFromFlags } from './mesh-client';

interface DemoFlags extends EtcdFlags, ServiceFlags, MetricsFlags {
  duration: number;
  concurrency: number;
  json: boolean;
  election: string;
  lb: LbPolicy;
  healthCheck: boolean;
  healthService?: string;
  failureCodes?: string[];
  maxEjectionPercent?: number;
  report?: string;
  csv?: string;
  ui?: MetricsAddr;
}

export function demoCommand(): Command {
  const cmd = new Command('demo')
    .description('the whole mesh in a minute: a local 3-member etcd (unless --etcd), 3 greeters, a load client; kills the leader, restarts it, adds a fourth, and shows traffic rebalancing live')
    .addOption(new Option('--duration <duration>', 'run time; the scenario is spread over it').default(40_000, '40s').argParser(parsePositiveDuration))
    .addOption(new Option('--concurrency <n>', 'calls in flight of the load client').default(8).argParser(intIn(1, 1000)))
    .addOption(new Option('--election <name>', 'election the greeters campaign on').default('demo-index').argParser(parseName))
    .addOption(new Option('--lb <policy>', 'load-balancing policy of the load client: load_aware, round_robin, pick_first or outlier_detection').default(DEFAULT_LB).argParser(parseLb))
    .addOption(new Option('--ui [host:port]', `also serve the dashboard (mesh dashboard) on the demo's etcd and print its URL (default ${DEFAULT_DASHBOARD_LISTEN})`).preset(DEFAULT_DASHBOARD_LISTEN).argParser(parseListen))
    .option('--json', 'no live view; print one JSON summary line ({ok, failed, events, ...}) at the end', false);
  addReportOptions(cmd);
  addHealthCheckOptions(cmd);
  addFailureOptions(cmd);
  addMetricsOption(cmd);
  addEtcdOptions(addServiceOptions(cmd));
  return cmd.action(async (flags: DemoFlags) => {
    // Signals first, so no moment of the start-up ignores Ctrl-C (an
    // interruption before anything started just ends with its exit code).
    const abort = new AbortController();
    let demo: Demo | undefined;
    let forced: NodeJS.Timeout | undefined;
    let firstAt = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      const code = 128 + (osConstants.signals[sig] ?? 0);
      if (!demo) process.exit(code);
      if (!abort.signal.aborted) {
        firstAt = performance.now();
        // First signal: stop the scenario, clean up in order. A cleanup that
        // hangs anyway is cut short: the 'exit' hook kills and removes all.
        abort.abort(sig);
        forced = setTimeout(() => process.exit(code), 15_000);
        forced.unref();
        return;
      }
      // One Ctrl-C under `npm run demo` arrives twice (from the terminal, and
      // forwarded by npm): a repeat within 250 ms is the same key press.
      if (performance.now() - firstAt < 250) return;
      // Second: no more waiting for greeters to drain; SIGKILL everything now.
      demo.hurry();
      if (forced) clearTimeout(forced);
      forced = setTimeout(() => process.exit(code), 5_000);
      forced.unref();
    };
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
    const healthCheck = healthCheckFromFlags(flags) ?? false;
    const loadAware = loadAwareOptionsOf(flags);
    const endpoints = configuredEndpoints(flags);
    // An existing cluster must answer (and accept our credentials) before anything starts.
    if (endpoints) (await connectEtcd(flags, endpoints)).close();
    if (flags.ui) warnIfExposed(flags.ui);
    // The demo's own load client is counted (client and mesh_ metrics); its greeters are child processes.
    // With --ui the dashboard reads it, so it is served (on a free loopback port) even without --metrics.
    const served = await serveMetrics(flags.ui && !flags.metrics ? { metrics: { host: '127.0.0.1', port: 0 } } : flags);
    demo = new Demo({
      etcd: endpoints ? etcdConfigFromFlags(flags, endpoints) : undefined,
      durationMs: flags.duration,
      concurrency: flags.concurrency,
      prefix: flags.prefix,
      service: flags.service,
      election: flags.election,
      lb: flags.lb,
      healthCheck,
      loadAware,
      view: !flags.json,
      signal: abort.signal,
      collectReport: Boolean(flags.report || flags.csv),
      ui: flags.ui ? { listen: flags.ui, scrape: served ? [served.addr] : [], onUrl: (url) => process.stdout.write(`${url}\n`) } : undefined,
    });
    const d = demo;
    // Whatever ends the process (a forced exit, an uncaught error), no child or data dir outlives it.
    process.on('exit', () => d.killNow());
    const summary = await demo.run();
    await served?.http.close();
    if (forced) clearTimeout(forced);
    if (summary.load && summary.ticks) {
      const input: ReportInput = { title: 'mesh demo: kill, restart, join', summary: summary.load, ticks: summary.ticks, markers: summary.markers ?? [], command: `mesh ${process.argv.slice(2).join(' ')}` };
      if (flags.report) writeReportHtml(flags.report, input);
      if (flags.csv) writeReportCsv(flags.csv, input);
    }
    const interrupted = summary.interrupted as NodeJS.Signals | undefined;
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({ ok: summary.ok, failed: summary.failed, rps: summary.load?.rps ?? 0, backends: summary.load?.backends ?? {}, leaders: summary.leaders, runId: summary.runId, ...(interrupted ? { interrupted } : {}), events: summary.events })}\n`);
    } else if (interrupted) {
      process.stdout.write(`\ndemo interrupted by ${interrupted}: ${summary.ok} calls ok, ${summary.failed} failed; everything it started is stopped and removed\n`);
    } else {
      process.stdout.write(`\ndemo finished: ${summary.ok} calls ok, ${summary.failed} failed; leaders in turn: ${summary.leaders.join(' -> ') || '-'}\n`);
    }
    // An interruption exits as the shell reports a signal: 128 + its number (SIGHUP 129, SIGINT 130, SIGTERM 143).
    const code = interrupted ? 128 + (osConstants.signals[interrupted] ?? 0) : summary.failed === 0 ? 0 : 1;
    if (interrupted === 'SIGHUP' && (process.stdin.isTTY || process.stdout.isTTY || process.stderr.isTTY)) {
      // The terminal is gone: node's normal exit would restore the tty's
      // modes and abort on EIO. Everything is cleaned up, so die of the
      // hang-up itself (the shell sees 129 all the same).
      process.removeAllListeners('SIGHUP');
      process.kill(process.pid, 'SIGHUP');
      return;
    }
    // Exit explicitly rather than by draining the event loop: node's own
    // teardown after a natural end restores the default signal actions, so
    // a Ctrl-C in those last milliseconds (the repeat of a double press)
    // would kill the process by SIGINT instead of the exit code it chose.
    process.stdout.write('', () => process.exit(code));
  });
}
