import { waitFor } from './poll';
import type { LogLine } from './mesh-process';
import type { LoadTick } from '../services/load-generator';
import type { LoadMarker } from '../services/load-report';
import { TrafficView } from '../services/traffic-view';
import { componentLogger } from '../core/logger';

/** One thing the demo did or saw, in order; `--json` prints them all. */
export interface DemoEvent {
  /** ms since the demo started. */
  t: number;
  event: string;
  [field: string]: unknown;
}

/**
 * What the demo says: every event, in order (the `--json` summary's
 * `events`), as a `demo.<event>` log line, as a line of the live view when
 * it is narrated, and, while the load runs, as a report marker. It also
 * reads the greeters' logs for what it narrates of them (leadership, the
 * index job) and keeps the view's header (leader, index progress).
 */
export class DemoNarration {
  readonly events: DemoEvent[] = [];
  /** Every greeter that became leader, in turn. */
  readonly leaders: string[] = [];
  /** Date.now() when the demo started: events' `t` counts from it. */
  readonly startedAt = Date.now();
  private readonly log = componentLogger('demo');
  private view: TrafficView | undefined;
  private leader: string | undefined;
  private indexPercent: number | undefined;
  /** performance.now() when the load began, while it runs: demo steps are report markers then. */
  private loadOrigin: number | undefined;
  private readonly loadMarkers: LoadMarker[] = [];

  constructor(view: boolean) {
    this.view = view ? new TrafficView() : undefined;
  }

  /** The greeter that leads now, as its logs said. */
  get currentLeader(): string | undefined {
    return this.leader;
  }

  /** The demo's events during the load, as report markers (ms after the load began). */
  get markers(): LoadMarker[] {
    return this.loadMarkers;
  }

  /** Record an event; `narrate` is its line for people (the view, the log message, the report marker). */
  record(event: string, fields: Record<string, unknown> = {}, narrate?: string): void {
    const e: DemoEvent = { t: Date.now() - this.startedAt, event, ...fields };
    this.events.push(e);
    if (this.loadOrigin !== undefined) this.loadMarkers.push({ tMs: performance.now() - this.loadOrigin, kind: 'event', text: narrate ?? event });
    this.log.info({ ...fields, event: `demo.${event}` }, narrate ?? event);
    if (narrate) this.view?.note(narrate);
  }

  /** The load began at `origin` (performance.now()): events are report markers from now on. */
  loadStarted(origin: number): void {
    this.loadOrigin = origin;
  }

  loadFinished(): void {
    this.loadOrigin = undefined;
  }

  /** One second of the load, drawn with the leader and the index progress. */
  tick(t: LoadTick): void {
    this.view?.render(t, `leader=${this.leader ?? '-'} index=${this.indexPercent ?? '-'}%  `);
  }

  /** Erase the live table so the next output starts clean. */
  clearView(): void {
    this.view?.clear();
  }

  /** The terminal went away (a hang-up): draw nothing on it any more. */
  dropView(): void {
    this.view = undefined;
  }

  /** Greeter log lines the demo narrates (leadership and the index job). */
  onGreeterLog(addr: string, l: LogLine): void {
    switch (l.event) {
      case 'index.leader': {
        const from = this.leader;
        this.leader = addr;
        this.leaders.push(addr);
        this.record(from ? 'leader.changed' : 'leader.elected', { from, to: addr }, from ? `leadership moved ${from} -> ${addr}` : `${addr} elected leader`);
        break;
      }
      case 'index.progress':
        this.indexPercent = l.percent as number;
        if (l.percent === 100 || (l.percent as number) % 50 === 0) this.record('index.progress', { by: addr, percent: l.percent }, `index build at ${l.percent}% (leader ${addr})`);
        break;
      case 'index.loaded':
        this.record('index.loaded', { by: addr, builtBy: l.builtBy }, `${addr} loaded the index built by ${l.builtBy}`);
        break;
      default:
    }
  }

  /**
   * In the background, narrate the first second (of `ticks`, from index
   * `from` on) that `seen` accepts: `event` with `addr`, the second and the
   * shares, and `say`'s line. Nothing if none comes within 10 s.
   */
  narrateTraffic(ticks: LoadTick[], from: number, seen: (t: LoadTick) => boolean, what: string, event: string, addr: string, say: (t: LoadTick) => string): void {
    void waitFor(what, () => ticks.slice(from).find(seen), 10_000, 100)
      .then((t) => this.record(event, { addr, second: t.second, shares: shares(t) }, say(t)))
      .catch(() => undefined);
  }
}

/** One backend's share of a second's calls, 0..1. */
export function share(t: LoadTick, addr: string): number {
  return (t.backends[addr] ?? 0) / (t.ok + t.failed || 1);
}

/** Every backend's share of a second's calls, in percent (one decimal). */
function shares(t: LoadTick): Record<string, number> {
  const total = t.ok + t.failed || 1;
  return Object.fromEntries(Object.entries(t.backends).map(([b, n]) => [b, Math.round((1000 * n) / total) / 10]));
}

/** The shares as narrated: `addr N%, ...`, by address. */
export function fmtShares(t: LoadTick): string {
  return Object.entries(shares(t))
    .sort()
    .map(([b, p]) => `${b} ${p}%`)
    .join(', ');
}
