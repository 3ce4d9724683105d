/**
 * How registry changes become deliveries: the coalescing under the etcd
 * resolver's EndpointWatcher (balancer/endpoint-watcher.ts), and the
 * process-wide counters of the resolver's work.
 *
 * Every delivery rebuilds the full set (O(registry)) and hands it to grpc-js,
 * whose policy then walks it again; a burst of registrations (a fleet
 * starting, a herd re-registering after an etcd outage) must cost a few of
 * those, not one per event. The events of one watch response are applied
 * together (ListWatch hands them over as one batch); on top of that:
 *
 * - a delivery waits for a lull: `quietMs` (default 5 ms) without a further
 *   change, so the responses of one burst (etcd sends a response per raft
 *   apply batch) land in one set;
 * - consecutive deliveries are at least `minIntervalMs` apart (default 50);
 * - nothing waits longer than `maxDelayMs` (default 100 ms) after the first
 *   change it carries (or `minIntervalMs` after the last delivery, if later):
 *   a join during a stream of changes still reaches the channel within
 *   about 100 ms, a join on a quiet registry within about `quietMs`;
 * - an `urgent` change (the first listing: nothing has been delivered yet)
 *   waits for no lull, only for the interval.
 *
 * One timer per coalescer, re-armed when it fires, never per event.
 */

export interface CoalesceOptions {
  /** A delivery waits until no change came for this long, ms. */
  quietMs: number;
  /** Two deliveries are at least this far apart, ms. */
  minIntervalMs: number;
  /** No change waits longer than this for its delivery (unless minIntervalMs says later), ms. */
  maxDelayMs: number;
}

/** The defaults: a lull of 5 ms, deliveries at least 50 ms apart, no change held over 100 ms. */
export const DEFAULT_COALESCE: Readonly<CoalesceOptions> = Object.freeze({ quietMs: 5, minIntervalMs: 50, maxDelayMs: 100 });

/**
 * What the project did before the lull and the cap (for benches comparing
 * the two): the first change after a quiet spell at once, then at most one
 * delivery per 50 ms.
 */
export const IMMEDIATE_COALESCE: Readonly<CoalesceOptions> = Object.freeze({ quietMs: 0, minIntervalMs: 50, maxDelayMs: 0 });

let processDefaults: CoalesceOptions = { ...DEFAULT_COALESCE };

/**
 * Change the defaults of every coalescer created after this call in the
 * process (benches and tests: the bench runs the same resolvers with
 * IMMEDIATE_COALESCE and with the defaults side by side). Returns the old ones.
 */
export function setCoalesceDefaults(o: Partial<CoalesceOptions>): CoalesceOptions {
  const old = processDefaults;
  processDefaults = { ...processDefaults, ...o };
  return old;
}

/**
 * Calls `flush(pendingSince)` once for every run of `changed()` calls, by the
 * rules above; `pendingSince` is the performance.now() of the run's first
 * change. No call after close().
 */
export class DeliveryCoalescer {
  private readonly o: CoalesceOptions;
  private timer: NodeJS.Timeout | undefined;
  /** First undelivered change (undefined: nothing pending). */
  private pendingSince: number | undefined;
  private lastChangeAt = 0;
  private lastFlushAt = -Infinity;
  private urgent = false;
  private closed = false;

  constructor(
    private readonly flush: (pendingSince: number) => void,
    opts: Partial<CoalesceOptions> = {},
  ) {
    this.o = { ...processDefaults, ...opts };
  }

  get pending(): boolean {
    return this.pendingSince !== undefined;
  }

  /** Something changed; `urgent`: deliver without waiting for a lull. */
  changed(urgent = false): void {
    if (this.closed) return;
    const now = performance.now();
    this.lastChangeAt = now;
    if (urgent) this.urgent = true;
    if (this.pendingSince === undefined) {
      this.pendingSince = now;
      this.arm(now);
    } else if (urgent) {
      // May move the delivery earlier than the armed timer.
      clearTimeout(this.timer);
      this.arm(now);
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pendingSince = undefined;
  }

  /** When the pending run is due (performance.now() time). */
  private due(): number {
    const floor = this.lastFlushAt + this.o.minIntervalMs;
    const lull = this.urgent ? 0 : this.lastChangeAt + this.o.quietMs;
    const cap = Math.max(this.pendingSince! + this.o.maxDelayMs, floor);
    return Math.min(Math.max(lull, floor), cap);
  }

  private arm(now: number): void {
    this.timer = setTimeout(this.fire, Math.max(0, Math.ceil(this.due() - now)));
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    if (this.closed || this.pendingSince === undefined) return;
    const now = performance.now();
    // A change since the timer was armed pushes the lull out: wait again
    // (bounded by the cap), one timer at a time.
    if (this.due() > now + 0.5) {
      this.arm(now);
      return;
    }
    const since = this.pendingSince;
    this.pendingSince = undefined;
    this.urgent = false;
    this.lastFlushAt = now;
    this.flush(since);
  };
}

/** Process-wide counters of the etcd resolver's work (a debug hook for tests and benches). */
export interface ResolverDeliveryStats {
  /** Full endpoint sets built from the registry (every one costs O(registry)). */
  rebuilds: number;
  /** Sets handed to grpc-js. */
  deliveries: number;
  /** Empty sets held back (the registry emptied while the channel had endpoints). */
  heldEmpty: number;
}

const stats: ResolverDeliveryStats = { rebuilds: 0, deliveries: 0, heldEmpty: 0 };

/** The counters so far, every resolver of the process together (a copy). */
export function resolverDeliveryStats(): ResolverDeliveryStats {
  return { ...stats };
}

/** @internal the resolver's own bookkeeping. */
export function countResolverWork(kind: keyof ResolverDeliveryStats): void {
  stats[kind]++;
}
