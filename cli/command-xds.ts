import { hostname } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { addEtcdOptions, CommandFailure, connectEtcd, type EtcdFlags } from './common';
import { parseName, parsePrefix } from './parse';
import { addMetricsOption, parseMetricsAddr, serveMetrics, type MetricsAddr, type MetricsFlags } from './metrics-flag';
import { finish, stopSignal } from './observe-lifecycle';
import { componentLogger } from '../core/logger';
import { xdsBootstrap } from '../services/xds-bootstrap';
import { XDS_LB_POLICIES, type XdsLbPolicy } from '../services/xds-resources';
import type { XdsServer } from '../services/xds-server';

/**
 * `mesh xds [--listen 127.0.0.1:18000] [--prefix services] [--lb round_robin]`:
 * the xDS control plane fed by the registry (services/xds-server.ts).
 * Prints the address it listens on (one stdout line), then serves until
 * SIGINT/SIGTERM (exit 0). A bad --listen is a usage error (exit 2); a port
 * taken or etcd unreachable at start-up one line and exit 1.
 *
 * `mesh xds --print-bootstrap [--node-id ID] [--zone Z] [--server-uri URI]`
 * prints a bootstrap file for a client and exits, without etcd.
 */

interface XdsFlags extends EtcdFlags, MetricsFlags {
  listen: MetricsAddr;
  prefix: string;
  lb: XdsLbPolicy;
  printBootstrap?: boolean;
  nodeId?: string;
  zone?: string;
  serverUri?: string;
}

export const DEFAULT_XDS_LISTEN = '127.0.0.1:18000';

function parseXdsLb(value: string): XdsLbPolicy {
  if (!(XDS_LB_POLICIES as readonly string[]).includes(value)) throw new InvalidArgumentError(`unknown policy ${JSON.stringify(value)}; choose one of ${XDS_LB_POLICIES.join(', ')}`);
  return value as XdsLbPolicy;
}

/** A gRPC target for the bootstrap's server_uri: `host:port` or `scheme:...`, printable, no spaces. */
function parseServerUri(value: string): string {
  if (!/^[\x21-\x7e]+$/.test(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a gRPC target (e.g. 127.0.0.1:18000, dns:///xds.example:18000)`);
  return value;
}

/** The address a client dials for `listen` (an unspecified bind address is replaced by loopback). */
function dialable(listen: MetricsAddr): string {
  const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
  return host.includes(':') ? `[${host}]:${listen.port}` : `${host}:${listen.port}`;
}

export function xdsCommand(): Command {
  const cmd = new Command('xds')
    .description('xDS control plane (ADS, state of the world) fed by the registry: any gRPC client resolving xds:///<service> balances over what etcd lists')
    .addOption(new Option('--listen <host:port>', 'where to serve ADS (port 0: any free port, printed on stdout)').default(parseMetricsAddr(DEFAULT_XDS_LISTEN), DEFAULT_XDS_LISTEN).argParser(parseMetricsAddr))
    .addOption(new Option('--prefix <prefix>', 'registry key prefix: every <prefix>/<service> is served as xds:///<service>').default('services').argParser(parsePrefix))
    .addOption(new Option('--lb <policy>', `the Clusters' load-balancing policy: ${XDS_LB_POLICIES.join(', ')} (ring_hash and least_request fall back to round_robin on clients without them)`).default('round_robin').argParser(parseXdsLb))
    .option('--print-bootstrap', 'print a bootstrap file for a gRPC client (GRPC_XDS_BOOTSTRAP) and exit')
    .addOption(new Option('--node-id <id>', 'with --print-bootstrap: the client\'s node id (default mesh-client-<hostname>)').argParser(parseName))
    .addOption(new Option('--zone <zone>', 'with --print-bootstrap: the client\'s zone (node locality)').argParser(parseName))
    .addOption(new Option('--server-uri <target>', 'with --print-bootstrap: the control plane as clients reach it (default: --listen)').argParser(parseServerUri));
  addEtcdOptions(cmd);
  addMetricsOption(cmd);
  return cmd.action(async (flags: XdsFlags) => {
    if (flags.printBootstrap) {
      const bootstrap = xdsBootstrap({ serverUri: flags.serverUri ?? dialable(flags.listen), nodeId: flags.nodeId ?? `mesh-client-${hostname()}`, zone: flags.zone });
      process.stdout.write(`${JSON.stringify(bootstrap, null, 2)}\n`);
      return;
    }
    for (const [flag, set] of [['--node-id', flags.nodeId], ['--zone', flags.zone], ['--server-uri', flags.serverUri]] as const) {
      if (set !== undefined) throw new CommandFailure(`${flag} goes with --print-bootstrap`, 2);
    }
    const etcd = await connectEtcd(flags, undefined, { readPrefix: `${flags.prefix}/` });
    // Loaded here, not on import: the Envoy protos cost every other mesh command nothing.
    /* eslint-disable @typescript-eslint/no-require-imports */
    const { XdsServer: Server } = require('../services/xds-server') as typeof import('../services/xds-server');
    /* eslint-enable @typescript-eslint/no-require-imports */
    const signal = stopSignal();
    let server: XdsServer | undefined;
    try {
      let served;
      try {
        served = await serveMetrics(flags);
      } catch (err) {
        etcd.close();
        throw err;
      }
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const observer = served ? new (require('../services/xds-metrics') as typeof import('../services/xds-metrics')).XdsMetrics(served.metrics.registry) : undefined;
      try {
        server = await Server.start(etcd, { host: flags.listen.host, port: flags.listen.port, prefix: flags.prefix, lb: flags.lb, observer, log: componentLogger('xds', { prefix: flags.prefix }) });
      } catch (err) {
        await served?.http.close();
        throw new CommandFailure((err as Error).message);
      }
      if (observer) {
        const plane = server;
        observer.clients = () => plane.clientInfo();
      }
      process.stdout.write(`${server.address}\n`);
      await signal.stopped;
      await server.close();
      await served?.http.close();
      finish(0);
    } finally {
      signal.dispose();
      await server?.close();
      etcd.close();
    }
  });
}
