import { EventEmitter } from 'node:events';
import type { Agent } from 'node:http';
import type { Logger } from '../core/logger';
import { histogramQuantile, parsePromText, type Buckets } from './dashboard-prom-text';
import { DEFAULT_MAX_SCRAPE_BYTES, readMetrics, scrapeAgent } from './dashboard-scrape-read';
import type { DashboardScrapeTargets, NotScraped, ScrapeRegistryPolicy, ScrapeTarget } from './dashboard-scrape-targets';

export type { ScrapeTarget } from './dashboard-scrape-targets';

export interface TargetStatus {
  addr: string;
  /** What its metrics say it is: a server (grpc_server_*), a client/load (mesh_lb_picks_total), both, or unknown yet. */
  kind: 'server' | 'client' | 'both' | 'unknown';
  ok: boolean;
  error?: string;
  /** Failed scrapes in a row (while failing). */
  failures?: number;
  /** Date.now() before which a failing target is not scraped again (its back-off). */
  retryAt?: number;
}

export interface BackendTraffic {
  backend: string;
  /** Calls in the summary window. */
  calls: number;
  rps: number;
  /** Fraction 0..1 of all backends' calls in the window. */
  share: number;
  /** From the server's grpc_server_handling_seconds; null when its server is not scraped. */
  p50Ms: number | null;
  p99Ms: number | null;
  /**
   * What the scraped clients' policies say of it (their last scrape):
   * `health` counts clients per health-check state (gRPC A17:
   * mesh_lb_backend_health), `ejectedBy` the clients that eject it now
   * (mesh_lb_backend_ejected). Empty / 0 when no client reports on it.
   */
  health: Record<string, number>;
  ejectedBy: number;
}

/** What the page charts: one column per scrape, one row per backend. */
export interface TrafficView {
  intervalMs: number;
  windowS: number;
  summaryS: number;
  backends: BackendTraffic[];
  series: { t: number[]; backends: string[]; rps: (number | null)[][]; p99Ms: (number | null)[][] };
  targets: TargetStatus[];
  /** Registry-named /metrics left out, by reason. */
  notScraped: NotScraped;
  /** What bounds the scraping (so the page can say it). */
  limits: { registry: ScrapeRegistryPolicy; maxTargets: number; maxBodyBytes: number; timeoutMs: number; maxBackoffMs: number };
  /** xDS clients connected to the scraped `mesh xds` control planes (mesh_xds_client_info), with the plane's /metrics address. */
  xdsClients: XdsClientRow[];
}

/** One connected xDS client, as its control plane reports it. */
export interface XdsClientRow {
  plane: string;
  nodeId: string;
  userAgent: string;
  zone: string;
  /** `LDS:greeter;CDS:greeter;...` */
  subscribed: string;
  /** `LDS:17;CDS:17;...` (etcd revisions) */
  ackedVersion: string;
  /** `EDS@17: detail`, or '' */
  lastNack: string;
}

export interface ScraperOptions {
  intervalMs?: number;
  /** One read (connect, headers, body) at most this long (default: the interval, at most 2 s). */
  timeoutMs?: number;
  /** A /metrics body over this is not read (the connection is dropped): the target fails with `body over N bytes`. */
  maxBodyBytes?: number;
  /** A failing target is retried after the interval, then twice that, ... up to this (ms), until it answers. */
  maxBackoffMs?: number;
  windowS?: number;
  summaryS?: number;
}

interface Sample {
  at: number;
  server: boolean;
  client: boolean;
  handled: number;
  buckets: Buckets;
  picks: Map<string, number>;
  /** A client's view: each backend's health-check state, and the backends it ejects. */
  health: Map<string, string>;
  ejected: Set<string>;
  /** A control plane's view: its connected xDS clients. */
  xds: Omit<XdsClientRow, 'plane'>[];
}

interface Tick {
  t: number;
  calls: Map<string, number>;
  rps: Map<string, number>;
  buckets: Map<string, Buckets>;
}

const HANDLED = 'grpc_server_handled_total';
const SECONDS_BUCKET = 'grpc_server_handling_seconds_bucket';
const PICKS = 'mesh_lb_picks_total';
const HEALTH = 'mesh_lb_backend_health';
const EJECTED = 'mesh_lb_backend_ejected';
const XDS_CLIENT = 'mesh_xds_client_info';
const WANTED = new Set([HANDLED, SECONDS_BUCKET, PICKS, HEALTH, EJECTED, XDS_CLIENT]);
/** Reads in flight at once: bounds the memory a round can take (each read holds at most maxBodyBytes). */
const PARALLEL = 16;

/** A counter's increase, Prometheus style: a drop means the process restarted, so the new value is the increase. */
function increase(now: number, before: number): number {
  return now >= before ? now - before : now;
}

/**
 * Reads the targets' /metrics each `intervalMs` and keeps, per scrape, the
 * calls and latency buckets per backend for the last `windowS` seconds.
 * Calls per backend come from the backend's own server
 * (grpc_server_handled_total) when its /metrics is scraped, else from the
 * clients' picks (mesh_lb_picks_total{backend}); latency only from servers
 * (grpc_server_handling_seconds). Emits `update(TrafficView)` after each
 * scrape.
 *
 * What it reads is chosen by DashboardScrapeTargets (policy, cap), and each
 * read is bounded in time, size and concurrency (PARALLEL), since the
 * registry names most targets. A target that fails is reported in
 * `targets` (logged when it starts failing and when it recovers), never
 * fatal, and backs off exponentially (the interval, twice that, ... up to
 * `maxBackoffMs`, jittered; reset by a success), so a registry naming
 * thousands of dead ports costs a few connection attempts a second.
 */
export class DashboardScraper extends EventEmitter<{ update: [view: TrafficView] }> {
  private readonly last = new Map<string, Sample>();
  private readonly status = new Map<string, TargetStatus>();
  private ticks: Tick[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private closed = false;
  private view: TrafficView;
  private notScraped: NotScraped = { overCap: 0, byPolicy: 0, invalid: 0 };
  private readonly agent: Agent;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly maxBodyBytes: number;
  private readonly maxBackoffMs: number;
  private readonly windowS: number;
  private readonly summaryS: number;

  constructor(
    private readonly chooser: DashboardScrapeTargets,
    /** The registry's endpoints now (their Metadata `metrics` and address). */
    private readonly registry: () => Iterable<{ metrics?: string; addr: string }>,
    private readonly log: Logger,
    opts: ScraperOptions = {},
  ) {
    super();
    this.intervalMs = opts.intervalMs ?? 1_000;
    this.timeoutMs = opts.timeoutMs ?? Math.min(this.intervalMs, 2_000);
    this.maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_SCRAPE_BYTES;
    this.maxBackoffMs = opts.maxBackoffMs ?? 60_000;
    this.windowS = opts.windowS ?? 300;
    this.summaryS = opts.summaryS ?? 60;
    this.agent = scrapeAgent(chooser.maxTargets);
    this.view = this.build([]);
  }

  start(): this {
    this.timer = setInterval(() => void this.scrape(), this.intervalMs);
    void this.scrape();
    return this;
  }

  get current(): TrafficView {
    return this.view;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.agent.destroy();
    this.removeAllListeners();
  }

  private async read(addr: string): Promise<Sample> {
    const text = await readMetrics(addr, { timeoutMs: this.timeoutMs, maxBytes: this.maxBodyBytes, agent: this.agent });
    const { samples } = parsePromText(text, WANTED);
    const s: Sample = { at: Date.now(), server: false, client: false, handled: 0, buckets: new Map(), picks: new Map(), health: new Map(), ejected: new Set(), xds: [] };
    for (const m of samples) {
      if (m.name === HANDLED) {
        s.server = true;
        s.handled += m.value;
      } else if (m.name === SECONDS_BUCKET) {
        const le = m.labels.le === '+Inf' ? Infinity : Number(m.labels.le);
        s.buckets.set(le, (s.buckets.get(le) ?? 0) + m.value);
      } else if (m.name === PICKS && m.labels.backend) {
        s.client = true;
        s.picks.set(m.labels.backend, (s.picks.get(m.labels.backend) ?? 0) + m.value);
      } else if (m.name === HEALTH && m.labels.backend && m.labels.state && m.value === 1) {
        s.health.set(m.labels.backend, m.labels.state);
      } else if (m.name === EJECTED && m.labels.backend && m.value === 1) {
        s.ejected.add(m.labels.backend);
      } else if (m.name === XDS_CLIENT && m.value === 1) {
        const l = m.labels;
        s.xds.push({ nodeId: l.node_id ?? '', userAgent: l.user_agent ?? '', zone: l.zone ?? '', subscribed: l.subscribed ?? '', ackedVersion: l.acked_version ?? '', lastNack: l.last_nack ?? '' });
      }
    }
    if (s.buckets.size) s.server = true;
    return s;
  }

  private async scrape(): Promise<void> {
    if (this.running || this.closed) return;
    this.running = true;
    try {
      const plan = this.chooser.plan(this.registry());
      const targets = plan.targets;
      this.notScraped = plan.notScraped;
      const serverCalls = new Map<string, { calls: number; dt: number; buckets: Buckets }>();
      const pickCalls = new Map<string, { calls: number; dt: number }>();
      const now = Date.now();
      const due = targets.filter((t) => (this.status.get(t.addr)?.retryAt ?? 0) <= now);
      const one = async (t: ScrapeTarget) => {
        let s: Sample;
        const before = this.status.get(t.addr);
        try {
          s = await this.read(t.addr);
        } catch (err) {
          const error = err instanceof Error ? err.message : String(err);
          const failures = (before?.failures ?? 0) + 1;
          // Jittered so that targets that failed together are not retried together.
          const backoff = Math.min(this.maxBackoffMs, this.intervalMs * 2 ** Math.min(failures - 1, 20)) * (0.5 + Math.random() / 2);
          if (before?.ok !== false) this.log.warn({ event: 'dashboard.scrape_failed', target: t.addr, err: error }, `scraping http://${t.addr}/metrics failed: ${error}; retrying with back-off up to ${this.maxBackoffMs / 1000} s`);
          this.status.set(t.addr, { addr: t.addr, kind: before?.kind ?? 'unknown', ok: false, error, failures, retryAt: Date.now() + Math.round(backoff) });
          return;
        }
        if (before?.ok === false) this.log.info({ event: 'dashboard.scrape_recovered', target: t.addr, failures: before.failures }, `scraping http://${t.addr}/metrics works again`);
        this.status.set(t.addr, { addr: t.addr, kind: s.server && s.client ? 'both' : s.server ? 'server' : s.client ? 'client' : 'unknown', ok: true });
        const prev = this.last.get(t.addr);
        this.last.set(t.addr, s);
        if (!prev) return;
        const dt = Math.max(0.001, (s.at - prev.at) / 1000);
        if (s.server) {
          const buckets: Buckets = new Map();
          for (const [le, c] of s.buckets) buckets.set(le, increase(c, prev.buckets.get(le) ?? 0));
          serverCalls.set(t.backend ?? t.addr, { calls: increase(s.handled, prev.handled), dt, buckets });
        }
        for (const [b, c] of s.picks) {
          const p = pickCalls.get(b) ?? { calls: 0, dt };
          p.calls += increase(c, prev.picks.get(b) ?? 0);
          pickCalls.set(b, p);
        }
      };
      const queue = [...due];
      const worker = async () => {
        for (let t = queue.shift(); t && !this.closed; t = queue.shift()) await one(t);
      };
      await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, worker));
      if (this.closed) return;
      const live = new Set(targets.map((t) => t.addr));
      for (const a of [...this.last.keys()]) if (!live.has(a)) this.last.delete(a);
      for (const a of [...this.status.keys()]) if (!live.has(a)) this.status.delete(a);

      const tick: Tick = { t: Date.now(), calls: new Map(), rps: new Map(), buckets: new Map() };
      for (const [b, p] of pickCalls) {
        tick.calls.set(b, p.calls);
        tick.rps.set(b, p.calls / p.dt);
      }
      // A backend's own count wins over what clients say they sent it (retries, other clients).
      for (const [b, s] of serverCalls) {
        tick.calls.set(b, s.calls);
        tick.rps.set(b, s.calls / s.dt);
        tick.buckets.set(b, s.buckets);
      }
      if (tick.calls.size || this.ticks.length) this.ticks.push(tick);
      const oldest = Date.now() - this.windowS * 1000;
      while (this.ticks.length && this.ticks[0].t < oldest) this.ticks.shift();
      this.view = this.build([...this.status.values()]);
      this.emit('update', this.view);
    } finally {
      this.running = false;
    }
  }

  private build(targets: TargetStatus[]): TrafficView {
    // The clients' views, from each one's last scrape.
    const health = new Map<string, Record<string, number>>();
    const ejectedBy = new Map<string, number>();
    // Only targets that answered their last read: a dead client's or plane's last word is not news.
    const answering = [...this.last].filter(([addr]) => this.status.get(addr)?.ok !== false);
    for (const [, s] of answering) {
      for (const [b, state] of s.health) {
        const h = health.get(b) ?? {};
        h[state] = (h[state] ?? 0) + 1;
        health.set(b, h);
      }
      for (const b of s.ejected) ejectedBy.set(b, (ejectedBy.get(b) ?? 0) + 1);
    }
    const names = [...new Set([...this.ticks.flatMap((t) => [...t.calls.keys()]), ...health.keys(), ...ejectedBy.keys()])].sort();
    const since = Date.now() - this.summaryS * 1000;
    const recent = this.ticks.filter((t) => t.t >= since);
    const spanS = recent.length > 1 ? Math.max(1, (recent[recent.length - 1].t - recent[0].t) / 1000 + this.intervalMs / 1000) : this.intervalMs / 1000;
    const total = recent.reduce((n, t) => n + [...t.calls.values()].reduce((a, b) => a + b, 0), 0);
    const backends = names.map((b): BackendTraffic => {
      const calls = recent.reduce((n, t) => n + (t.calls.get(b) ?? 0), 0);
      const merged: Buckets = new Map();
      for (const t of recent) for (const [le, c] of t.buckets.get(b) ?? []) merged.set(le, (merged.get(le) ?? 0) + c);
      const q = (x: number) => {
        const v = histogramQuantile(x, merged);
        return v === undefined ? null : Math.round(v * 1e5) / 100;
      };
      return { backend: b, calls, rps: Math.round((calls / spanS) * 10) / 10, share: total ? calls / total : 0, p50Ms: q(0.5), p99Ms: q(0.99), health: health.get(b) ?? {}, ejectedBy: ejectedBy.get(b) ?? 0 };
    });
    const p99 = (t: Tick, b: string) => {
      const bk = t.buckets.get(b);
      const v = bk ? histogramQuantile(0.99, bk) : undefined;
      return v === undefined ? null : Math.round(v * 1e5) / 100;
    };
    return {
      intervalMs: this.intervalMs,
      windowS: this.windowS,
      summaryS: this.summaryS,
      backends,
      series: {
        t: this.ticks.map((t) => Math.round(t.t / 100) / 10),
        backends: names,
        rps: names.map((b) => this.ticks.map((t) => (t.rps.has(b) ? Math.round(t.rps.get(b)! * 10) / 10 : null))),
        p99Ms: names.map((b) => this.ticks.map((t) => p99(t, b))),
      },
      targets: targets.sort((a, b) => (a.addr < b.addr ? -1 : 1)),
      notScraped: this.notScraped,
      xdsClients: answering.flatMap(([plane, s]) => s.xds.map((c) => ({ plane, ...c }))),
      limits: { registry: this.chooser.policy, maxTargets: this.chooser.maxTargets, maxBodyBytes: this.maxBodyBytes, timeoutMs: this.timeoutMs, maxBackoffMs: this.maxBackoffMs },
    };
  }
}
