import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { ListWatch, isDelete, type ListWatchState } from '../core/list-watch';
import { prefixRange } from '../core/resumable-watch';
import { DecodeError, decodeEndpoint, type EndpointRecord } from './endpoint-codec';
import { componentLogger, type Logger } from '../core/logger';
import { DeliveryCoalescer, type CoalesceOptions } from './resolver-etcd-coalesce';

/**
 * IDLE: not started. LISTING: Get of the prefix under way. WATCHING: watch
 * open from the listed revision + 1. RETRYING: etcd did not answer the Get;
 * trying again. CLOSED: final. (The states of the ListWatch underneath.)
 */
export type EndpointWatcherState = ListWatchState;

/** One delivery: the complete current endpoint set and the etcd revision it reflects. */
export interface EndpointSnapshot {
  endpoints: EndpointRecord[];
  revision: string;
}

/** Events of an EndpointWatcher; listeners run synchronously. */
export interface EndpointWatcherEvents {
  /** The complete current set (never a delta). */
  update: [snapshot: EndpointSnapshot];
  /** A Get failed; retrying by itself. Emitted only if someone listens. */
  error: [err: Error];
  state: [next: EndpointWatcherState, previous: EndpointWatcherState, reason: string];
  /** From the first change of a batch to its `update`, ms (coalescing and rate limit included). */
  lag: [ms: number];
}

/**
 * The live endpoint set under one key prefix, as etcd's Go `naming/resolver`
 * builds it, on the one ListWatch (core/list-watch.ts): a Get of the prefix,
 * then a Watch from the Get's revision + 1; a watch that cannot resume is
 * answered by a fresh Get whose set replaces the old one whole. Every
 * delivery is the full set, never a delta.
 *
 * - Deliveries are coalesced (DeliveryCoalescer, resolver-etcd-coalesce.ts):
 *   the events of one watch response are applied together, a delivery waits
 *   for a lull of a few ms, deliveries are at least `minIntervalMs` apart
 *   (default 50 ms) and no change waits more than about 100 ms. A burst of N
 *   changes costs one or a few updates, not N, which matters when each
 *   update rebuilds the set and grpc-js's children for thousands of
 *   endpoints. The first listing is delivered without waiting for a lull.
 * - While etcd is unreachable nothing is delivered: the last set stands.
 * - Bad records are logged with their key and left out.
 *
 * No event fires after `close()`.
 */
export class EndpointWatcher extends EventEmitter<EndpointWatcherEvents> {
  private readonly log: Logger;
  private readonly records = new Map<string, EndpointRecord>();
  /** The value each key's warnings were last logged for: a warning is logged once per change of the record, not on every re-list or rewrite of the same value. */
  private readonly warnedFor = new Map<string, string>();
  private readonly lw: ListWatch;
  private readonly coalescer: DeliveryCoalescer;
  private listed = false;
  private revision = '0';
  private closed = false;

  constructor(
    client: Etcd3,
    /** Full key prefix including the trailing slash, e.g. `services/greeter/`. */
    readonly keyPrefix: string,
    log?: Logger,
    /** Coalescing (resolver-etcd-coalesce.ts); a number: the minimum interval between deliveries, ms. */
    coalesce: number | Partial<CoalesceOptions> = {},
  ) {
    super();
    this.coalescer = new DeliveryCoalescer((since) => this.flush(since), typeof coalesce === 'number' ? { minIntervalMs: coalesce } : coalesce);
    this.log = log ?? componentLogger('endpoint-watcher', { prefix: keyPrefix });
    this.lw = new ListWatch(client, prefixRange(keyPrefix), this.log);
    this.lw.on('state', (next, prev, reason) => this.emit('state', next, prev, reason));
    this.lw.on('error', (err) => {
      // Informative (the ListWatch retries by itself): never let a missing
      // listener turn it into a crash.
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
    this.lw.on('list', (kvs, revision) => {
      this.records.clear();
      for (const kv of kvs) this.apply(false, kv);
      this.revision = revision;
      // The first set goes out without waiting for a lull: nothing was delivered yet.
      this.coalescer.changed(!this.listed);
      this.listed = true;
    });
    this.lw.on('events', (events: IEvent[], revision) => {
      for (const ev of events) this.apply(isDelete(ev), ev.kv);
      this.revision = revision;
      this.coalescer.changed();
    });
  }

  get state(): EndpointWatcherState {
    return this.lw.state;
  }

  /** The current set, in no particular order (may be empty before the first Get answers). */
  snapshot(): EndpointSnapshot {
    return { endpoints: [...this.records.values()], revision: this.revision };
  }

  start(): void {
    this.lw.start();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // The ListWatch logs the transition to CLOSED and emits `state` once more.
    this.lw.close();
    this.coalescer.close();
    this.removeAllListeners();
  }

  private apply(deleted: boolean, kv: IKeyValue): void {
    const key = kv.key.toString('utf8');
    if (deleted) {
      this.records.delete(key);
      this.warnedFor.delete(key);
      return;
    }
    const rec = decodeEndpoint(key, kv.value);
    // The value as text only for the warning bookkeeping (a good record, the usual case, needs none).
    const warnOnce = () => {
      const value = kv.value.toString('utf8');
      const fresh = this.warnedFor.get(key) !== value;
      this.warnedFor.set(key, value);
      return fresh;
    };
    if (rec instanceof DecodeError) {
      if (warnOnce()) this.log.warn({ event: 'watcher.bad_record', key, reason: rec.reason }, `skipping bad registry record ${key}: ${rec.reason}`);
      this.records.delete(key);
      return;
    }
    if (rec.warnings.length === 0) this.warnedFor.delete(key);
    else if (warnOnce()) for (const w of rec.warnings) this.log.warn({ event: 'watcher.bad_metadata', key, reason: w }, `registry record ${key}: ${w}`);
    this.records.set(key, rec);
  }

  private flush(pendingSince: number): void {
    if (this.closed) return;
    this.emit('update', this.snapshot());
    this.emit('lag', performance.now() - pendingSince);
  }
}
