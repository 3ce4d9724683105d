import { Command, Option } from 'commander';
import { addEtcdOptions, addServiceOptions, connectEtcd, type EtcdFlags, type ServiceFlags } from './common';
import { parseHost, parseName, parsePort, parseTtl } from './parse';
import { GreeterServer } from '../services/greeter-server';
import { componentLogger } from '../balancer/logger';
import { serverCredentials, addServerTlsOptions, type ServerTlsFlags } from './tls';

interface ServerFlags extends EtcdFlags, ServiceFlags, ServerTlsFlags {
  port: number;
  host: string;
  ttl: number;
  register: boolean;
  elect?: string;
}

export function serverCommand(): Command {
  const cmd = new Command('server')
    .description('serve helloworld.Greeter/SayHello and register in etcd under <prefix>/<service>/<host:port> with a TTL lease kept alive')
    .addOption(new Option('--port <port>', 'port to listen on (0 picks a free one)').argParser(parsePort).makeOptionMandatory())
    .addOption(new Option('--host <host>', 'address to bind and advertise').default('127.0.0.1').argParser(parseHost))
    .addOption(new Option('--ttl <seconds>', 'lease TTL').default(10).argParser(parseTtl))
    .option('--no-register', 'serve only; do not register in etcd')
    .addOption(new Option('--elect <name>', 'also campaign in election NAME: the leader builds the shared index (progress in progress/NAME), followers load it').argParser(parseName));
  addEtcdOptions(addServiceOptions(cmd));
  addServerTlsOptions(cmd);
  return cmd.action(async (flags: ServerFlags) => {
    const log = componentLogger('cli');
    const etcd = flags.register ? await connectEtcd(flags) : undefined;
    const server = new GreeterServer({
      host: flags.host,
      port: flags.port,
      etcd,
      prefix: flags.prefix,
      service: flags.service,
      ttlSeconds: flags.ttl,
      credentials: serverCredentials(flags),
      elect: flags.elect,
    });
    let signalled = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (signalled) {
        log.warn({ event: 'cli.signal_again', signal: sig }, 'second signal: exiting now');
        process.exit(130);
      }
      signalled = true;
      void server
        .shutdown(`received ${sig}`)
        .then(() => {
          etcd?.close();
          process.exit(0);
        });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    try {
      await server.start();
    } catch (err) {
      etcd?.close();
      throw err;
    }
    // Keep the process alive until a signal: the gRPC server's handles do that.
  });
}
