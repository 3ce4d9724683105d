import { InvalidArgumentError, Option, Command } from 'commander';
import { addEtcdOptions, connectEtcd, CommandFailure, type EtcdFlags } from './common';
import { parseName, parsePrefix } from './parse';
import { parseMetricsAddr, type MetricsAddr } from './metrics-flag';
import { finish, stopSignal } from './observe-lifecycle';
import { Dashboard } from '../dashboard/dashboard';
import { isLoopbackHost } from '../dashboard/dashboard-loopback';
import { DEFAULT_MAX_SCRAPE_TARGETS, DEFAULT_SCRAPE_REGISTRY, SCRAPE_REGISTRY_POLICIES, type ScrapeRegistryPolicy } from '../dashboard/dashboard-scrape-targets';
import { DEFAULT_MAX_SCRAPE_BYTES } from '../dashboard/dashboard-scrape-read';
import { componentLogger } from '../core/logger';

/**
 * `mesh dashboard [--listen 127.0.0.1:8080] [--scrape host:port,...] [--scrape-registry off|loopback|any]`: the
 * read-only web page of the mesh (dashboard/). Needs read permission on the
 * registry prefix only; elections, locks and queues need read on
 * --election-prefix (else that part of the page says it is not permitted).
 * Ends on SIGINT/SIGTERM, exit 0.
 */

interface DashboardFlags extends EtcdFlags {
  listen: MetricsAddr;
  scrape: string[];
  scrapeRegistry: ScrapeRegistryPolicy;
  prefix: string;
  service?: string;
  electionPrefix?: string;
}

export const DEFAULT_DASHBOARD_LISTEN = '127.0.0.1:8080';

/** `--listen HOST:PORT`, as --metrics takes it (port 0: any free port; the log and stdout say which). */
export function parseListen(value: string): MetricsAddr {
  return parseMetricsAddr(value);
}

/** `--scrape host:port[,host:port...]`: each a /metrics address with a real port. */
export function parseScrapeList(value: string): string[] {
  const list = value.split(',').map((s) => s.trim());
  return list.map((item) => {
    if (item === '') throw new InvalidArgumentError(`${JSON.stringify(value)} is not a list of HOST:PORT`);
    const a = parseMetricsAddr(item);
    if (a.port === 0) throw new InvalidArgumentError(`${JSON.stringify(item)} has port 0: name the port its /metrics is on`);
    return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
  });
}

/** `--scrape-registry off|loopback|any`. */
export function parseScrapeRegistry(value: string): ScrapeRegistryPolicy {
  if (!(SCRAPE_REGISTRY_POLICIES as readonly string[]).includes(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not one of ${SCRAPE_REGISTRY_POLICIES.join(', ')}`);
  return value as ScrapeRegistryPolicy;
}

/** One stderr line when the page is reachable from other machines: it has no authentication. */
export function warnIfExposed(listen: MetricsAddr): void {
  if (isLoopbackHost(listen.host)) return;
  process.stderr.write(`mesh: warning: the dashboard on ${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port} is unauthenticated: anyone who can reach it sees every service, endpoint and lock in etcd\n`);
}

export function dashboardCommand(): Command {
  const cmd = new Command('dashboard')
    .description('read-only live web page of the mesh: services and endpoints (weight, zone, lease TTL), traffic share and latency per backend, elections, locks, queues, an event timeline')
    .addOption(new Option('--listen <host:port>', 'where to serve the page (loopback by default; any other address is unauthenticated to the network)').default(parseListen(DEFAULT_DASHBOARD_LISTEN), DEFAULT_DASHBOARD_LISTEN).argParser(parseListen))
    .addOption(new Option('--scrape <host:port,...>', '/metrics to read besides the servers the registry names (load clients); always read').default([], 'none').argParser(parseScrapeList))
    .addOption(
      new Option(
        '--scrape-registry <off|loopback|any>',
        `which /metrics the registry's Metadata may make the dashboard read: none, loopback addresses only, or any address (anyone who may write the registry chooses them); at most ${DEFAULT_MAX_SCRAPE_TARGETS} targets in all, bodies up to ${DEFAULT_MAX_SCRAPE_BYTES / 1024 / 1024} MiB`,
      )
        .default(DEFAULT_SCRAPE_REGISTRY)
        .argParser(parseScrapeRegistry),
    )
    .addOption(new Option('--prefix <prefix>', 'registry key prefix').default('services').argParser(parsePrefix))
    .addOption(new Option('--service <name>', 'only this service (default: all)').argParser(parseName))
    .addOption(new Option('--election-prefix <prefix>', 'look for elections, locks and queues only under this key prefix (default: whole keyspace)'));
  addEtcdOptions(cmd);
  return cmd.action(async (flags: DashboardFlags) => {
    warnIfExposed(flags.listen);
    const registry = `${flags.prefix}/${flags.service ? `${flags.service}/` : ''}`;
    const etcd = await connectEtcd(flags, undefined, { readPrefix: registry });
    const signal = stopSignal();
    let dashboard: Dashboard | undefined;
    try {
      try {
        dashboard = await Dashboard.start(etcd, {
          listen: flags.listen,
          scrape: flags.scrape,
          scrapeRegistry: flags.scrapeRegistry,
          prefix: flags.prefix,
          service: flags.service,
          coordinationPrefix: flags.electionPrefix,
        }, componentLogger('dashboard', { prefix: flags.prefix }));
      } catch (err) {
        throw new CommandFailure((err as Error).message);
      }
      process.stdout.write(`${dashboard.url}\n`);
      await signal.stopped;
      finish(0);
    } finally {
      signal.dispose();
      await dashboard?.close();
      etcd.close();
    }
  });
}
