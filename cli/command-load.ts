import { Command, Option } from 'commander';
import { addEtcdOptions, addServiceOptions, connectEtcd, type EtcdFlags, type ServiceFlags } from './common';
import { intIn, parseLb, parsePositiveDuration, parseTarget } from './parse';
import { DEFAULT_LB, type LbPolicy } from '../balancer/channel';
import { addClientTlsOptions, clientCredentials, type ClientTlsFlags } from './tls';
import { createGreeterClient } from '../services/greeter-client';
import { runLoad, type LoadReport } from '../services/load-generator';
import { TrafficView } from '../services/traffic-view';
import { registerEtcdResolver } from '../balancer/resolver-etcd';
import { servicePrefix } from '../balancer/endpoint-codec';

interface LoadFlags extends EtcdFlags, ServiceFlags, ClientTlsFlags {
  concurrency: number;
  duration: number;
  deadline: number;
  target?: string;
  json: boolean;
  name: string;
  lb: LbPolicy;
}

export function loadCommand(): Command {
  const cmd = new Command('load')
    .description('closed-loop SayHello load through the etcd resolver (or --target); live per-backend view, then a summary')
    .addOption(new Option('--concurrency <n>', 'calls in flight').default(16).argParser(intIn(1, 10_000)))
    .addOption(new Option('--duration <duration>', 'how long to run').default(10_000, '10s').argParser(parsePositiveDuration))
    .addOption(new Option('--deadline <duration>', 'deadline of each call, retries and hedges included').default(1000, '1s').argParser(parsePositiveDuration))
    .addOption(new Option('--target <target>', 'any grpc-js target (e.g. ipv4:127.0.0.1:50051,127.0.0.1:50052) instead of the etcd resolver').argParser(parseTarget))
    .addOption(new Option('--name <name>', 'name sent in each request').default('load'))
    .addOption(new Option('--lb <policy>', 'load-balancing policy: load_aware (slow backends get little traffic; weights honoured), round_robin or pick_first').default(DEFAULT_LB).argParser(parseLb))
    .option('--json', 'print one JSON summary object as the last stdout line', false);
  addEtcdOptions(addServiceOptions(cmd));
  addClientTlsOptions(cmd);
  return cmd.action(async (flags: LoadFlags) => {
    const target = flags.target ?? `etcd:///${flags.prefix}/${flags.service}`;
    // Usage errors first (bad certificate files), then etcd: the probe reads
    // the service's prefix, which is all a client's role needs.
    const tls = clientCredentials(flags, target);
    const etcd = flags.target ? undefined : await connectEtcd(flags, undefined, { readPrefix: servicePrefix(flags.prefix, flags.service) });
    if (etcd) registerEtcdResolver(etcd);
    const client = createGreeterClient(target, tls.credentials, { lb: flags.lb }, tls.options);
    const view = flags.json ? undefined : new TrafficView();
    const abort = new AbortController();
    process.on('SIGINT', () => abort.abort());
    process.on('SIGTERM', () => abort.abort());
    const report = await runLoad({
      client,
      concurrency: flags.concurrency,
      durationMs: flags.duration,
      deadlineMs: flags.deadline,
      name: flags.name,
      signal: abort.signal,
      onTick: view ? (t) => view.render(t) : undefined,
    });
    client.close();
    etcd?.close();
    if (flags.json) process.stdout.write(`${JSON.stringify(report)}\n`);
    else printSummary(report);
    // Some failures are figures to report; no success at all is a failed run.
    if (report.ok === 0 && report.failed > 0) {
      process.stderr.write(`mesh: no call succeeded (${Object.entries(report.errors).map(([c, n]) => `${c} ${n}`).join(', ')}); are backends registered under ${flags.target ?? `${flags.prefix}/${flags.service}/`}?\n`);
      process.exitCode = 1;
    }
  });
}

function printSummary(r: LoadReport): void {
  const lines = [
    '',
    `requests ${r.requests}  ok ${r.ok}  failed ${r.failed}  ${r.rps} rps over ${r.durationS}s`,
    `latency ms  p50 ${r.latencyMs.p50}  p90 ${r.latencyMs.p90}  p99 ${r.latencyMs.p99}  max ${r.latencyMs.max}`,
    'backends:',
    ...Object.entries(r.backends)
      .sort()
      .map(([b, n]) => `  ${b.padEnd(22)} ${String(n).padStart(8)}  ${((100 * n) / Math.max(1, r.ok)).toFixed(1)}%`),
  ];
  if (Object.keys(r.errors).length) lines.push('errors:', ...Object.entries(r.errors).map(([c, n]) => `  ${c} ${n}`));
  process.stdout.write(lines.join('\n') + '\n');
}
