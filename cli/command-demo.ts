import { Command, Option } from 'commander';
import { addEtcdOptions, addServiceOptions, configuredEndpoints, connectEtcd, connectOptions, type EtcdFlags, type ServiceFlags } from './common';
import { intIn, parseLb, parseName, parsePositiveDuration } from './parse';
import { DEFAULT_LB, type LbPolicy } from '../balancer/channel';
import { Demo } from '../services/demo';

interface DemoFlags extends EtcdFlags, ServiceFlags {
  duration: number;
  concurrency: number;
  json: boolean;
  election: string;
  lb: LbPolicy;
}

export function demoCommand(): Command {
  const cmd = new Command('demo')
    .description('the whole mesh in a minute: a local 3-member etcd (unless --etcd), 3 greeters, a load client; kills the leader, restarts it, adds a fourth, and shows traffic rebalancing live')
    .addOption(new Option('--duration <duration>', 'run time; the scenario is spread over it').default(40_000, '40s').argParser(parsePositiveDuration))
    .addOption(new Option('--concurrency <n>', 'calls in flight of the load client').default(8).argParser(intIn(1, 1000)))
    .addOption(new Option('--election <name>', 'election the greeters campaign on').default('demo-index').argParser(parseName))
    .addOption(new Option('--lb <policy>', 'load-balancing policy of the load client: load_aware, round_robin or pick_first').default(DEFAULT_LB).argParser(parseLb))
    .option('--json', 'no live view; print one JSON summary line ({ok, failed, events, ...}) at the end', false);
  addEtcdOptions(addServiceOptions(cmd));
  return cmd.action(async (flags: DemoFlags) => {
    const endpoints = configuredEndpoints(flags);
    // An existing cluster must answer (and accept our credentials) before anything starts.
    if (endpoints) (await connectEtcd(flags, endpoints)).close();
    const abort = new AbortController();
    const demo = new Demo({
      etcd: endpoints ? connectOptions(flags, endpoints) : undefined,
      durationMs: flags.duration,
      concurrency: flags.concurrency,
      prefix: flags.prefix,
      service: flags.service,
      election: flags.election,
      lb: flags.lb,
      view: !flags.json,
      signal: abort.signal,
    });
    // First signal: stop the scenario and clean up. Second: stop now (the
    // 'exit' hook below still kills every child).
    const onSignal = () => {
      if (abort.signal.aborted) process.exit(130);
      abort.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('exit', () => demo.killNow());
    const summary = await demo.run();
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({ ok: summary.ok, failed: summary.failed, rps: summary.load.rps, backends: summary.load.backends, leaders: summary.leaders, events: summary.events })}\n`);
    } else {
      process.stdout.write(`\ndemo finished: ${summary.ok} calls ok, ${summary.failed} failed; leaders in turn: ${summary.leaders.join(' -> ') || '-'}\n`);
    }
    process.exitCode = summary.failed === 0 ? 0 : 1;
  });
}
