import { EventEmitter } from 'node:events';
import type { Logger } from '../core/logger';
import { histogramQuantile, parsePromText, type Buckets } from './dashboard-prom-text';

/** A /metrics to read, and the backend it speaks for when it is a registered server. */
export interface ScrapeTarget {
  /** host:port of its /metrics. */
  addr: string;
  /** The registry address of the server behind it, when the registry names it (Metadata `metrics`). */
  backend?: string;
}

export interface TargetStatus {
  addr: string;
  /** What its metrics say it is: a server (grpc_server_*), a client/load (mesh_lb_picks_total), both, or unknown yet. */
  kind: 'server' | 'client' | 'both' | 'unknown';
  ok: boolean;
  error?: string;
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
}

/** What the page charts: one column per scrape, one row per backend. */
export interface TrafficView {
  intervalMs: number;
  windowS: number;
  summaryS: number;
  backends: BackendTraffic[];
  series: { t: number[]; backends: string[]; rps: (number | null)[][]; p99Ms: (number | null)[][] };
  targets: TargetStatus[];
}

interface Sample {
  at: number;
  server: boolean;
  client: boolean;
  handled: number;
  buckets: Buckets;
  picks: Map<string, number>;
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

/** A counter's increase, Prometheus style: a drop means the process restarted, so the new value is the increase. */
function increase(now: number, before: number): number {
  return now >= before ? now - before : now;
}

/**
 * Reads every target's /metrics each `intervalMs` (each read bounded by
 * the interval, at most 2 s) and keeps, per scrape, the calls and latency
 * buckets per backend for the last `windowS` seconds. Calls per backend
 * come from the backend's own server (grpc_server_handled_total) when its
 * /metrics is scraped, else from the clients' picks (mesh_lb_picks_total
 * {backend}); latency only from servers (grpc_server_handling_seconds).
 * Emits `update(TrafficView)` after each scrape. A target that fails is
 * reported in `targets` (and logged when it starts failing), never fatal.
 */
export class DashboardScraper extends EventEmitter<{ update: [view: TrafficView] }> {
  private readonly last = new Map<string, Sample>();
  private readonly status = new Map<string, TargetStatus>();
  private ticks: Tick[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private closed = false;
  private view: TrafficView;

  constructor(
    private readonly targets: () => ScrapeTarget[],
    private readonly log: Logger,
    private readonly intervalMs = 1_000,
    private readonly windowS = 300,
    private readonly summaryS = 60,
  ) {
    super();
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
    this.removeAllListeners();
  }

  private async read(addr: string): Promise<Sample> {
    const res = await fetch(`http://${addr}/metrics`, { signal: AbortSignal.timeout(Math.min(this.intervalMs, 2_000)) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const { samples } = parsePromText(await res.text());
    const s: Sample = { at: Date.now(), server: false, client: false, handled: 0, buckets: new Map(), picks: new Map() };
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
      }
    }
    if (s.buckets.size) s.server = true;
    return s;
  }

  private async scrape(): Promise<void> {
    if (this.running || this.closed) return;
    this.running = true;
    try {
      const targets = this.targets();
      const serverCalls = new Map<string, { calls: number; dt: number; buckets: Buckets }>();
      const pickCalls = new Map<string, { calls: number; dt: number }>();
      await Promise.all(
        targets.map(async (t) => {
          let s: Sample;
          try {
            s = await this.read(t.addr);
          } catch (err) {
            const error = err instanceof Error ? (err.name === 'TimeoutError' ? 'timed out' : (err.cause as Error | undefined)?.message ?? err.message) : String(err);
            if (this.status.get(t.addr)?.ok !== false) this.log.warn({ event: 'dashboard.scrape_failed', target: t.addr, err: error }, `scraping http://${t.addr}/metrics failed: ${error}`);
            this.status.set(t.addr, { addr: t.addr, kind: this.status.get(t.addr)?.kind ?? 'unknown', ok: false, error });
            return;
          }
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
        }),
      );
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
    const names = [...new Set(this.ticks.flatMap((t) => [...t.calls.keys()]))].sort();
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
      return { backend: b, calls, rps: Math.round((calls / spanS) * 10) / 10, share: total ? calls / total : 0, p50Ms: q(0.5), p99Ms: q(0.99) };
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
    };
  }
}
