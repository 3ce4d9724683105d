import { isHostPort } from '../balancer/endpoint-codec';
import type { Logger } from '../core/logger';
import { isLoopbackHost } from './dashboard-loopback';

/** A /metrics to read, and the backend it speaks for when it is a registered server. */
export interface ScrapeTarget {
  /** host:port of its /metrics. */
  addr: string;
  /** The registry address of the server behind it, when the registry names it (Metadata `metrics`). */
  backend?: string;
}

/**
 * Which /metrics the registry may make the dashboard read (`--scrape-registry`):
 * none, loopback addresses only (the default: the dashboard itself is on
 * loopback by default), or any address.
 */
export const SCRAPE_REGISTRY_POLICIES = ['off', 'loopback', 'any'] as const;
export type ScrapeRegistryPolicy = (typeof SCRAPE_REGISTRY_POLICIES)[number];
export const DEFAULT_SCRAPE_REGISTRY: ScrapeRegistryPolicy = 'loopback';
/** Most targets scraped at once (operator's and registry's together). */
export const DEFAULT_MAX_SCRAPE_TARGETS = 256;

/** Registry-named /metrics that are not scraped, by reason. */
export interface NotScraped {
  /** Beyond the cap on targets. */
  overCap: number;
  /** Refused by --scrape-registry (off; not loopback). */
  byPolicy: number;
  /** Not host:port (so never put into a URL). */
  invalid: number;
}

/** What to scrape this round, and what was left out. */
export interface ScrapePlan {
  targets: ScrapeTarget[];
  notScraped: NotScraped;
}

/**
 * Chooses what the scraper reads from two sources of different trust: the
 * operator's `--scrape` list, always scraped, and the addresses the
 * registry names (Metadata `metrics`), which anyone who may write the
 * registry chooses. Those are scraped only when `policy` lets them (a
 * registry writer must not turn the dashboard into a port scanner of the
 * network behind it), only when they are plain host:port, and only up to
 * `maxTargets` in all. A registry target keeps its slot while it stays
 * named (no churn when others come and go); free slots go to new ones in
 * address order. Each reason for leaving targets out is logged once when
 * it starts applying (and again only after it stopped), not per round.
 */
export class DashboardScrapeTargets {
  private readonly operator: string[];
  private readonly chosen = new Set<string>();
  private logged: NotScraped = { overCap: 0, byPolicy: 0, invalid: 0 };

  constructor(
    operator: string[],
    readonly policy: ScrapeRegistryPolicy,
    readonly maxTargets: number,
    private readonly log: Logger,
  ) {
    this.operator = [...new Set(operator)];
  }

  /** The plan for `registry`: each endpoint's /metrics (if any) and its backend address. */
  plan(registry: Iterable<{ metrics?: string; addr: string }>): ScrapePlan {
    const notScraped: NotScraped = { overCap: 0, byPolicy: 0, invalid: 0 };
    const operator = new Set(this.operator);
    const named = new Map<string, string>();
    const example: Partial<Record<keyof NotScraped, string>> = {};
    for (const e of registry) {
      const m = e.metrics;
      if (m === undefined || named.has(m)) continue;
      if (operator.has(m)) {
        named.set(m, e.addr);
        continue;
      }
      if (!isHostPort(m)) {
        notScraped.invalid++;
        example.invalid ??= m;
      } else if (this.policy === 'off' || (this.policy === 'loopback' && !isLoopbackHost(m))) {
        notScraped.byPolicy++;
        example.byPolicy ??= m;
      } else named.set(m, e.addr);
    }
    for (const a of this.chosen) if (!named.has(a)) this.chosen.delete(a);
    const free = this.maxTargets - this.operator.length - this.chosen.size;
    const fresh = [...named.keys()].filter((a) => !operator.has(a) && !this.chosen.has(a)).sort();
    for (const a of fresh.slice(0, Math.max(0, free))) this.chosen.add(a);
    notScraped.overCap = Math.max(0, fresh.length - Math.max(0, free));
    if (notScraped.overCap) example.overCap = fresh[Math.max(0, free)];
    this.report(notScraped, example);
    const targets = [...this.operator, ...this.chosen].map((addr) => ({ addr, backend: named.get(addr) }));
    return { targets, notScraped };
  }

  private report(n: NotScraped, example: Partial<Record<keyof NotScraped, string>>): void {
    const why: Record<keyof NotScraped, string> = {
      overCap: `over the cap of ${this.maxTargets} targets`,
      byPolicy: this.policy === 'off' ? 'the registry names them and --scrape-registry is off' : 'not loopback addresses, and --scrape-registry is loopback (use --scrape-registry any, or --scrape)',
      invalid: 'not host:port',
    };
    for (const k of Object.keys(why) as (keyof NotScraped)[]) {
      if (n[k] > 0 && this.logged[k] === 0) {
        this.log.warn({ event: 'dashboard.scrape_skipped', reason: k, count: n[k], example: example[k]?.slice(0, 200) }, `not scraping ${n[k]} /metrics named in the registry: ${why[k]} (e.g. ${example[k]?.slice(0, 200)})`);
      }
    }
    this.logged = n;
  }
}
