import type { LoadTick } from './load-figures';
import { LatencyHistogram } from './load-histogram';
import type { ScheduleTally } from './load-schedule';

interface Bucket {
  tick: LoadTick;
  hist: LatencyHistogram;
}

/**
 * The per-second ticks of one load run. Second k covers [k-1, k) s after
 * `origin`: `sent` counts calls by when they started, ok/failed/late by when
 * they ended, `asked` by intended start, from the schedule alone (so a
 * client that cannot keep up shows the gap, not a lower target).
 *
 * Every second is handed out, in order, even one in which nothing happened
 * (a stalled event loop, every backend hung): a missing second would draw
 * the line straight across the stall. Ticks follow the load's own seconds
 * (not setInterval's drift); a late timer hands out every second due.
 */
export class LoadSeconds {
  private readonly buckets = new Map<number, Bucket>();
  /** The first second not handed out yet. */
  private next = 1;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly origin: number,
    private readonly warmupMs: number,
    private readonly onTick?: (tick: LoadTick) => void,
    private readonly asked?: ScheduleTally,
  ) {}

  /** The second `now` falls in. */
  secondAt(now: number): number {
    return Math.floor((now - this.origin) / 1000) + 1;
  }

  sent(now: number): void {
    this.bucket(this.secondAt(now)).tick.sent++;
  }

  ok(now: number, ms: number, backend: string, late: boolean): void {
    const b = this.bucket(this.secondAt(now));
    b.tick.ok++;
    if (late) b.tick.late++;
    b.hist.record(ms);
    b.tick.backends[backend] = (b.tick.backends[backend] ?? 0) + 1;
  }

  failed(now: number, code: string): void {
    const b = this.bucket(this.secondAt(now));
    b.tick.failed++;
    b.tick.errors[code] = (b.tick.errors[code] ?? 0) + 1;
  }

  /** Hand out each second every time one ends, until stop(). */
  start(): void {
    const k = this.secondAt(performance.now());
    this.timer = setTimeout(
      () => {
        this.flush(this.secondAt(performance.now()));
        this.start();
      },
      Math.max(1, this.origin + k * 1000 - performance.now()),
    );
  }

  /** Stop the timer, hand out the seconds before `beforeSecond` not handed out yet, and free the rest. */
  stop(beforeSecond: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush(beforeSecond);
    for (const b of this.buckets.values()) b.hist.destroy();
    this.buckets.clear();
  }

  private bucket(k: number): Bucket {
    let b = this.buckets.get(k);
    if (!b) {
      b = { tick: { second: k, sent: 0, ok: 0, failed: 0, backends: {}, errors: {}, warmup: (k - 1) * 1000 < this.warmupMs, latencyMs: { p50: 0, p90: 0, p99: 0, 'p99.9': 0, max: 0 }, late: 0 }, hist: new LatencyHistogram() };
      this.buckets.set(k, b);
    }
    return b;
  }

  private flush(beforeSecond: number): void {
    for (; this.next < beforeSecond; this.next++) {
      const k = this.next;
      // A second nothing happened in gets a bucket only now, to be handed out empty.
      const b = this.buckets.get(k) ?? this.bucket(k);
      this.buckets.delete(k);
      b.tick.latencyMs = b.hist.figures();
      b.hist.destroy();
      if (this.asked) b.tick.asked = this.asked.countUntil(this.origin + k * 1000);
      this.onTick?.(b.tick);
    }
  }
}
