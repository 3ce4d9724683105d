import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { Logger } from '../core/logger';
import { errorText } from '../core/etcd-errors';

/** What the page needs to count a lease down by itself: seconds left at `at` (ms, this process's clock). */
export interface LeaseTtl {
  /** Seconds left when read; -1: etcd says the lease is gone (expired or revoked). */
  ttl: number;
  /** TTL the lease was granted with (0 when gone). */
  granted: number;
  /** Date.now() of the read. */
  at: number;
}

/** Leases looked up per refresh tick (4 a second) at most: bounds the read load on a big registry. */
const MAX_LOOKUPS_PER_TICK = 100;
/** TimeToLive calls in flight at once. */
const PARALLEL = 16;

/**
 * TTLs of the leases the topology names, read with etcd's TimeToLive (a
 * read: no lease is granted, kept alive or revoked here). A lease is read
 * when first named, then again once its count-down has run past half its
 * granted TTL (a kept-alive lease is back at full TTL by then), at most
 * every quarter of its TTL (250 ms..1 s), so a lease nobody keeps alive is
 * seen running out (etcd gives whole seconds). Emits `change(hex ->
 * LeaseTtl)` with what changed.
 *
 * A failed lookup is retried on a later tick; the last value stands
 * meanwhile. Failures are logged when they start (and counted until
 * lookups work again, which is logged too), not once per lease per tick:
 * with etcd down, a registry of 1,000 leases would otherwise log hundreds
 * of lines a second. No event after close().
 */
export class DashboardLeases extends EventEmitter<{ change: [changed: Map<string, LeaseTtl>] }> {
  private readonly known = new Map<string, LeaseTtl>();
  private readonly wanted = new Set<string>();
  private readonly lastTry = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** Lookups failed since the last one that worked (0: all is well). */
  private failed = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly log: Logger,
    tickMs = 250,
  ) {
    super();
    this.timer = setInterval(() => this.tick(), tickMs);
    this.timer.unref();
  }

  /** Every lease the topology names now; leases no longer named are forgotten. */
  setWanted(hexes: Iterable<string>): void {
    if (this.closed) return;
    const now = new Set(hexes);
    for (const h of this.wanted) if (!now.has(h)) this.forget(h);
    const fresh: string[] = [];
    for (const h of now) {
      if (!this.wanted.has(h)) fresh.push(h);
      this.wanted.add(h);
    }
    if (fresh.length) void this.lookup(fresh);
  }

  get(hex: string): LeaseTtl | undefined {
    return this.known.get(hex);
  }

  snapshot(): Record<string, LeaseTtl> {
    return Object.fromEntries(this.known);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.removeAllListeners();
  }

  private forget(hex: string): void {
    this.wanted.delete(hex);
    this.known.delete(hex);
    this.lastTry.delete(hex);
  }

  private tick(): void {
    if (this.closed) return;
    const now = Date.now();
    const due: string[] = [];
    for (const h of this.wanted) {
      if (due.length >= MAX_LOOKUPS_PER_TICK) break;
      const k = this.known.get(h);
      const minGapMs = Math.min(1_000, Math.max(250, ((k?.granted ?? 4) * 1000) / 4));
      if (this.inFlight.has(h) || now - (this.lastTry.get(h) ?? 0) < minGapMs) continue;
      if (!k) due.push(h);
      else if (k.ttl >= 0 && k.ttl - (now - k.at) / 1000 < Math.max(1, k.granted / 2)) due.push(h);
    }
    if (due.length) void this.lookup(due);
  }

  private async lookup(hexes: string[]): Promise<void> {
    const changed = new Map<string, LeaseTtl>();
    const queue = [...hexes];
    const worker = async () => {
      for (let h = queue.shift(); h !== undefined && !this.closed; h = queue.shift()) {
        if (this.inFlight.has(h)) continue;
        this.inFlight.add(h);
        this.lastTry.set(h, Date.now());
        try {
          const res = await this.client.leaseClient.leaseTimeToLive({ ID: BigInt(`0x${h}`).toString() });
          if (this.closed || !this.wanted.has(h)) continue;
          if (this.failed) this.log.info({ event: 'dashboard.lease_ttl_recovered', failed: this.failed }, `TimeToLive works again (${this.failed} lookups had failed)`);
          this.failed = 0;
          const v: LeaseTtl = { ttl: Number(res.TTL), granted: Number(res.grantedTTL), at: Date.now() };
          this.known.set(h, v);
          changed.set(h, v);
        } catch (err) {
          if (!this.closed && this.failed++ === 0) this.log.warn({ event: 'dashboard.lease_ttl_failed', lease: h, err: errorText(err) }, `TimeToLive of lease ${h} failed; retrying later (further failures are counted, not logged, until a lookup works)`);
        } finally {
          this.inFlight.delete(h);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, hexes.length) }, worker));
    if (!this.closed && changed.size) this.emit('change', changed);
  }
}
