import { Command, Option } from 'commander';
import { addEtcdOptions, addServiceOptions, connectEtcd, errorText, type EtcdFlags, type ServiceFlags } from './common';
import { intIn, parseDuration, parseLb, parsePositiveDuration, parseTarget } from './parse';
import { DEFAULT_LB, type LbPolicy } from '../balancer/channel';
import { addClientTlsOptions, clientCredentials, type ClientTlsFlags } from './tls';
import { createGreeterClient, sayHello } from '../services/greeter-client';
import { registerEtcdResolver } from '../balancer/resolver-etcd';
import { servicePrefix } from '../balancer/endpoint-codec';

interface ClientFlags extends EtcdFlags, ServiceFlags, ClientTlsFlags {
  name: string;
  interval: number;
  count?: number;
  deadline: number;
  target?: string;
  lb: LbPolicy;
}

export function clientCommand(): Command {
  const cmd = new Command('client')
    .description('call SayHello through etcd:///<prefix>/<service> and print each reply')
    .addOption(new Option('--name <name>', 'name to greet').default('world'))
    .addOption(new Option('--interval <duration>', 'pause between calls').default(1000, '1s').argParser(parseDuration))
    .addOption(new Option('--count <n>', 'stop after n calls (default: until Ctrl-C)').argParser(intIn(1, 1_000_000_000)))
    .addOption(new Option('--deadline <duration>', 'deadline of each call, retries included').default(1000, '1s').argParser(parsePositiveDuration))
    .addOption(new Option('--target <target>', 'any grpc-js target instead of the etcd resolver').argParser(parseTarget))
    .addOption(new Option('--lb <policy>', 'load-balancing policy: load_aware, round_robin or pick_first').default(DEFAULT_LB).argParser(parseLb));
  addEtcdOptions(addServiceOptions(cmd));
  addClientTlsOptions(cmd);
  return cmd.action(async (flags: ClientFlags) => {
    const target = flags.target ?? `etcd:///${flags.prefix}/${flags.service}`;
    // Usage errors first (bad certificate files), then etcd: the probe reads
    // the service's prefix, which is all a client's role needs.
    const tls = clientCredentials(flags, target);
    const etcd = flags.target ? undefined : await connectEtcd(flags, undefined, { readPrefix: servicePrefix(flags.prefix, flags.service) });
    if (etcd) registerEtcdResolver(etcd);
    const client = createGreeterClient(target, tls.credentials, { lb: flags.lb }, tls.options);
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
        process.stderr.write(`mesh: call failed: ${errorText(err)}\n`);
      }
    }
    client.close();
    etcd?.close();
    process.exitCode = failures > 0 ? 1 : 0;
  });
}
