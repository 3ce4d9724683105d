import { Command, Option } from 'commander';
import { errorText } from './common';
import { intIn, parseDuration, parseLb, parsePositiveDuration, parseTarget } from './parse';
import { DEFAULT_LB } from '../balancer/channel';
import { addMeshClientOptions, openMeshClient, type MeshClientFlags } from './mesh-client';
import { serveMetrics, type MetricsFlags } from './metrics-flag';
import { sayHello } from '../services/greeter-client';
import * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';

/**
 * A failed call, said in the mesh's terms. grpc-js reports an empty or dead
 * backend set only as DEADLINE_EXCEEDED "Waiting for LB pick" (or
 * UNAVAILABLE); through the etcd resolver we look at the registry and say
 * which it is: nothing registered under the prefix, or registered but none
 * reachable. The original gRPC error stays at the end of the line.
 */
async function explainFailure(err: unknown, registry: string | undefined, etcd: Etcd3 | undefined): Promise<string> {
  const text = errorText(err);
  const code = (err as { code?: number }).code;
  if (!registry || !etcd || (code !== grpc.status.DEADLINE_EXCEEDED && code !== grpc.status.UNAVAILABLE)) return text;
  let count: number;
  try {
    count = await etcd.getAll().prefix(registry).count();
  } catch (readErr) {
    return `${text} (and etcd could not be read to check ${registry}: ${errorText(readErr)})`;
  }
  return count === 0
    ? `no backend is registered under ${registry} in etcd (${text})`
    : `${count} key(s) registered under ${registry} in etcd, but no backend answered within the deadline: all unreachable or not serving (${text})`;
}

interface ClientFlags extends MeshClientFlags, MetricsFlags {
  name: string;
  interval: number;
  count?: number;
  deadline: number;
}

export function clientCommand(): Command {
  const cmd = new Command('client')
    .description('call SayHello through etcd:///<prefix>/<service> and print each reply')
    .addOption(new Option('--name <name>', 'name to greet').default('world'))
    .addOption(new Option('--interval <duration>', 'pause between calls').default(1000, '1s').argParser(parseDuration))
    .addOption(new Option('--count <n>', 'stop after n calls (default: until Ctrl-C)').argParser(intIn(1, 1_000_000_000)))
    .addOption(new Option('--deadline <duration>', 'deadline of each call, retries included').default(1000, '1s').argParser(parsePositiveDuration))
    .addOption(new Option('--target <target>', 'any grpc-js target instead of the etcd resolver').argParser(parseTarget))
    .addOption(new Option('--lb <policy>', 'load-balancing policy: load_aware, round_robin, pick_first or outlier_detection').default(DEFAULT_LB).argParser(parseLb));
  addMeshClientOptions(cmd);
  return cmd.action(async (flags: ClientFlags) => {
    // Before the channel: it takes the client-metrics interceptor when built.
    const served = await serveMetrics(flags);
    const mesh = await openMeshClient(flags);
    const { greeter: client, etcd } = mesh;
    let stop = false;
    const onSignal = () => (stop = true);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    let failures = 0;
    for (let i = 0; !stop && (flags.count === undefined || i < flags.count); i++) {
      if (i > 0 && flags.interval > 0) await new Promise((r) => setTimeout(r, flags.interval));
      try {
        process.stdout.write(`${await sayHello(client, flags.name, flags.deadline)}\n`);
      } catch (err) {
        failures++;
        process.stderr.write(`mesh: call failed: ${await explainFailure(err, mesh.registry, etcd)}\n`);
      }
    }
    mesh.close();
    await served?.http.close();
    process.exitCode = failures > 0 ? 1 : 0;
  });
}
