import { Command, Option } from 'commander';
import { addEtcdOptions, addServiceOptions, connectEtcd, errorText, type EtcdFlags, type ServiceFlags } from './common';
import { intIn, parseDuration, parsePositiveDuration, parseTarget } from './parse';
import { addClientTlsOptions, clientCredentials, type ClientTlsFlags } from './tls';
import { createGreeterClient, sayHello } from '../services/greeter-client';
import { registerEtcdResolver } from '../balancer/resolver-etcd';
import { servicePrefix } from '../balancer/endpoint-codec';
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

interface ClientFlags extends EtcdFlags, ServiceFlags, ClientTlsFlags {
  name: string;
  interval: number;
  count?: number;
  deadline: number;
  target?: string;
}

export function clientCommand(): Command {
  const cmd = new Command('client')
    .description('call SayHello through etcd:///<prefix>/<service> (round_robin) and print each reply')
    .addOption(new Option('--name <name>', 'name to greet').default('world'))
    .addOption(new Option('--interval <duration>', 'pause between calls').default(1000, '1s').argParser(parseDuration))
    .addOption(new Option('--count <n>', 'stop after n calls (default: until Ctrl-C)').argParser(intIn(1, 1_000_000_000)))
    .addOption(new Option('--deadline <duration>', 'deadline of each call, retries included').default(1000, '1s').argParser(parsePositiveDuration))
    .addOption(new Option('--target <target>', 'any grpc-js target instead of the etcd resolver').argParser(parseTarget));
  addEtcdOptions(addServiceOptions(cmd));
  addClientTlsOptions(cmd);
  return cmd.action(async (flags: ClientFlags) => {
    const target = flags.target ?? `etcd:///${flags.prefix}/${flags.service}`;
    // Usage errors first (bad certificate files), then etcd: the probe reads
    // the service's prefix, which is all a client's role needs.
    const tls = clientCredentials(flags, target);
    const etcd = flags.target ? undefined : await connectEtcd(flags, undefined, { readPrefix: servicePrefix(flags.prefix, flags.service) });
    if (etcd) registerEtcdResolver(etcd);
    const client = createGreeterClient(target, tls.credentials, {}, tls.options);
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
        process.stderr.write(`mesh: call failed: ${await explainFailure(err, etcd && servicePrefix(flags.prefix, flags.service), etcd)}\n`);
      }
    }
    client.close();
    etcd?.close();
    process.exitCode = failures > 0 ? 1 : 0;
  });
}
