import { Command, Option } from 'commander';
import { EtcdPermissionDeniedError } from 'etcd3/lib/errors';
import { addEtcdOptions, addServiceOptions, CommandFailure, connectEtcd, errorText, UsageError, type EtcdFlags, type ServiceFlags } from './common';
import { servicePrefix } from '../balancer/endpoint-codec';
import { splitUser } from '../core/etcd-config';
import { isUnspecifiedHost, parseAdvertise, parseHost, parseName, parsePort, parseTtl, parseWeightFlag } from './parse';
import { DEFAULT_WEIGHT } from '../balancer/endpoint-codec';
import { GreeterServer } from '../services/greeter-server';
import { drainOnSignals } from '../services/mesh-server-signals';
import { serverCredentials, addServerTlsOptions, type ServerTlsFlags } from './tls';
import { addMetricsOption, serveMetrics, type MetricsFlags } from './metrics-flag';

interface ServerFlags extends EtcdFlags, ServiceFlags, ServerTlsFlags, MetricsFlags {
  port: number;
  host: string;
  advertise?: { host: string; port?: number };
  ttl: number;
  register: boolean;
  elect?: string;
  weight: number;
  zone?: string;
}

export function serverCommand(): Command {
  const cmd = new Command('server')
    .description('serve helloworld.Greeter/SayHello (with grpc.health.v1 and server reflection) and register in etcd under <prefix>/<service>/<host:port> with a TTL lease kept alive')
    .addOption(new Option('--port <port>', 'port to listen on (0 picks a free one)').argParser(parsePort).makeOptionMandatory())
    .addOption(new Option('--host <host>', 'address to bind; also the one advertised unless --advertise is given').default('127.0.0.1').argParser(parseHost))
    .addOption(new Option('--advertise <host[:port]>', 'address clients dial, registered in etcd and named in replies (default: --host and the bound port); needed when binding 0.0.0.0 or ::').argParser(parseAdvertise))
    .addOption(new Option('--ttl <seconds>', 'lease TTL').default(10).argParser(parseTtl))
    .option('--no-register', 'serve only; do not register in etcd')
    .addOption(new Option('--weight <n>', 'relative share of traffic, 0..1000 (0: registered but drained), written into the registration').default(DEFAULT_WEIGHT).argParser(parseWeightFlag))
    .addOption(new Option('--zone <zone>', 'zone written into the registration').argParser(parseName))
    .addOption(new Option('--elect <name>', 'also campaign in election NAME: the leader builds the shared index (progress in progress/NAME), followers load it').argParser(parseName));
  addEtcdOptions(addServiceOptions(cmd));
  addServerTlsOptions(cmd);
  addMetricsOption(cmd);
  return cmd.action(async (flags: ServerFlags) => {
    // 0.0.0.0 / :: is a fine bind address and a useless registration: every
    // client would dial itself. Refused before anything is bound or registered.
    if (isUnspecifiedHost(flags.host) && !flags.advertise) {
      throw new UsageError(`--host ${flags.host} listens on every interface, which no client can dial: give --advertise HOST[:PORT], the address clients reach this server at`);
    }
    // Usage errors first (bad certificate files), then etcd: the probe reads
    // our own prefix, which the server's role may; nothing else.
    const credentials = serverCredentials(flags);
    const etcd = flags.register ? await connectEtcd(flags, undefined, { readPrefix: servicePrefix(flags.prefix, flags.service), needs: 'readwrite' }) : undefined;
    // Bound before registering, so the Metadata names the real address.
    let served;
    try {
      served = await serveMetrics(flags);
    } catch (err) {
      etcd?.close();
      throw err;
    }
    const server = new GreeterServer({
      host: flags.host,
      advertise: flags.advertise,
      port: flags.port,
      etcd,
      prefix: flags.prefix,
      service: flags.service,
      ttlSeconds: flags.ttl,
      credentials,
      elect: flags.elect,
      metadata: { weight: flags.weight, ...(flags.zone !== undefined ? { zone: flags.zone } : {}) },
      metrics: served?.metrics,
      metricsAddr: served?.addr,
    });
    // First signal: drain (NOT_SERVING, revoke, answer while clients move away, stop), exit 0; a second exits 130.
    drainOnSignals(server, { onDrained: () => etcd?.close() });
    try {
      await server.start();
    } catch (err) {
      etcd?.close();
      if (err instanceof EtcdPermissionDeniedError) {
        const who = flags.user !== undefined ? `etcd user ${JSON.stringify(splitUser(flags.user).username)}` : 'this etcd client (no --user)';
        throw new CommandFailure(`${who} may not register under ${servicePrefix(flags.prefix, flags.service)} (permission denied): the server's role needs readwrite on that prefix`);
      }
      throw new CommandFailure(errorText(err));
    }
    // Keep the process alive until a signal: the gRPC server's handles do that.
  });
}
