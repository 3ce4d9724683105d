import type { Etcd3 } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import { DashboardTopology, type TopologyOptions } from './dashboard-topology';
import { DashboardScraper } from './dashboard-scraper';
import { DashboardScrapeTargets, DEFAULT_MAX_SCRAPE_TARGETS, DEFAULT_SCRAPE_REGISTRY, type ScrapeRegistryPolicy } from './dashboard-scrape-targets';
import { DashboardHttp } from './dashboard-http';

/** Least time between two whole-topology pushes to the pages. */
const TOPOLOGY_PUSH_MS = 100;

export interface DashboardOptions extends TopologyOptions {
  listen: { host: string; port: number };
  /** host:port of /metrics to read besides those the registry names (load clients). */
  scrape: string[];
  /** Which /metrics the registry may name for scraping (default loopback addresses only); `scrape` is always read. */
  scrapeRegistry?: ScrapeRegistryPolicy;
  /** Most targets scraped (default 256); registry-named ones beyond are left out, and the page says how many. */
  maxScrapeTargets?: number;
  /** Largest /metrics body read (default 4 MiB). */
  maxScrapeBytes?: number;
  scrapeIntervalMs?: number;
}

/**
 * `mesh dashboard`: the topology (etcd watches), the scraper (/metrics) and
 * the HTTP server, wired together. Every change is pushed to open pages as
 * it happens. Owns neither the etcd client nor the process: close() stops
 * what it started (idempotent) and leaves the client to its owner.
 */
export class Dashboard {
  private closing: Promise<void> | undefined;
  private stopPushes: () => void = () => undefined;

  private constructor(
    readonly topology: DashboardTopology,
    readonly scraper: DashboardScraper,
    readonly http: DashboardHttp,
  ) {}

  static async start(client: Etcd3, opts: DashboardOptions, log: Logger = componentLogger('dashboard', { prefix: opts.prefix })): Promise<Dashboard> {
    const topology = new DashboardTopology(client, opts, log);
    const extra = [...new Set(opts.scrape)];
    // Registered servers with --metrics name their /metrics in Metadata; --scrape adds the rest (load clients).
    const chooser = new DashboardScrapeTargets(extra, opts.scrapeRegistry ?? DEFAULT_SCRAPE_REGISTRY, opts.maxScrapeTargets ?? DEFAULT_MAX_SCRAPE_TARGETS, log);
    const scraper = new DashboardScraper(chooser, () => topology.registry.entries(), log, { intervalMs: opts.scrapeIntervalMs ?? 1_000, maxBodyBytes: opts.maxScrapeBytes });
    const http = new DashboardHttp(
      {
        topology: () => ({ ...topology.snapshot(), traffic: scraper.current, timeline: topology.timeline.list() }),
        initialEvents: () => [
          { event: 'topology', data: topology.snapshot() },
          { event: 'traffic', data: scraper.current },
          { event: 'timeline', data: { reset: true, events: topology.timeline.list() } },
        ],
      },
      log,
    );
    const d = new Dashboard(topology, scraper, http);
    // A registry in churn is pushed at most every TOPOLOGY_PUSH_MS (each push is the whole state), never later than that after a change.
    let lastPush = 0;
    let pushTimer: NodeJS.Timeout | undefined;
    const pushTopology = () => {
      pushTimer = undefined;
      lastPush = Date.now();
      http.push({ event: 'topology', data: topology.snapshot() });
    };
    topology.on('change', () => {
      if (pushTimer) return;
      const wait = lastPush + TOPOLOGY_PUSH_MS - Date.now();
      if (wait <= 0) pushTopology();
      else pushTimer = setTimeout(pushTopology, wait);
    });
    d.stopPushes = () => clearTimeout(pushTimer);
    topology.on('leases', (changed) => http.push({ event: 'leases', data: { now: Date.now(), leases: changed } }));
    topology.on('timeline', (ev) => http.push({ event: 'timeline', data: { reset: false, events: [ev] } }));
    scraper.on('update', (view) => http.push({ event: 'traffic', data: view }));
    try {
      await http.listen(opts.listen.host, opts.listen.port);
    } catch (err) {
      await d.close();
      throw err;
    }
    topology.start();
    scraper.start();
    log.info({ event: 'dashboard.listening', url: d.url, scrape: extra, scrapeRegistry: chooser.policy, maxScrapeTargets: chooser.maxTargets }, `dashboard on ${d.url}`);
    return d;
  }

  get url(): string {
    return `http://${this.http.addr}/`;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.scraper.close();
      this.topology.close();
      this.stopPushes();
      await this.http.close();
    })();
    return this.closing;
  }
}
