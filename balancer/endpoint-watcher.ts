import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent } from 'etcd3';
import { ResumableWatch, prefixRange } from './resumable-watch';
import { DecodeError, decodeEndpoint, type EndpointRecord } from './endpoint-codec';
import { StateCell } from './state-cell';
import { Backoff } from './backoff';
import { componentLogger, type Logger } from './logger';

/**
 * IDLE: not started. LISTING: Get of the prefix under way. WATCHING: watch
 * open from the listed revision + 1. RETRYING: etcd did not answer the Get;
 * trying again. CLOSED: final.
 */
export type EndpointWatcherState = 'IDLE' | 'LISTING' | 'WATCHING' | 'RETRYING' | 'CLOSED';

/** One delivery: the complete current endpoint set and the etcd revision it reflects. */
export interface EndpointSnapshot {
  endpoints: EndpointRecord[];
  revision: string;
}

/**
 * The live endpoint set under one key prefix, as etcd's Go `naming/resolver`
 * builds it: a Get of the prefix, then a Watch from the Get's revision + 1,
 * so no event between the two is missed or applied twice. Every delivery is
 * the full set, never a delta.
 *
 * - Deliveries are coalesced: the first change after a quiet spell is
 *   delivered on the next tick (no added latency), further changes at most
 *   once per `minIntervalMs` (default 50 ms). A burst of N changes costs one
 *   or two updates, not N, which matters when each update rebuilds grpc-js's
 *   round_robin children for thousands of endpoints.
 * - A dropped stream resumes from the last applied event's revision + 1. A
 *   watch that cannot resume (etcd compacted past that revision) is answered
 *   by a fresh Get and Watch; the new set replaces the old one whole, so
 *   nothing stale stays and nothing live is dropped.
 * - While etcd is unreachable nothing is delivered: the last set stands.
 * - Bad records are logged once with their key and left out.
 *
 * Events: `update(EndpointSnapshot)`, `error(Error)` (a Get failed; retrying
 * by itself; emitted only if someone listens),
 * `state(next, previous, reason)` on every transition.
 * No event fires after `close()`.
 */
export class EndpointWatcher extends EventEmitter {
  private readonly cell: StateCell<EndpointWatcherState>;
  private readonly log: Logger;
  private readonly records = new Map<string, EndpointRecord>();
  private readonly backoff = new Backoff(100, 1_000);
  private watch: ResumableWatch | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private flushScheduled = false;
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlushAt = 0;
  private revision = '0';
  /** Bumped on every (re)list so callbacks of an abandoned watch do nothing. */
  private epoch = 0;

  constructor(
    private readonly client: Etcd3,
    /** Full key prefix including the trailing slash, e.g. `services/greeter/`. */
    readonly keyPrefix: string,
    log?: Logger,
    private readonly minIntervalMs = 50,
  ) {
    super();
    this.log = log ?? componentLogger('endpoint-watcher', { prefix: keyPrefix });
    this.cell = new StateCell<EndpointWatcherState>('IDLE', this.log, 'watcher');
    this.cell.on('change', (next: EndpointWatcherState, prev: EndpointWatcherState, reason: string) => this.emit('state', next, prev, reason));
  }

  get state(): EndpointWatcherState {
    return this.cell.value;
  }

  /** The current set, in no particular order (may be empty before the first Get answers). */
  snapshot(): EndpointSnapshot {
    return { endpoints: [...this.records.values()], revision: this.revision };
  }

  start(): void {
    if (!this.cell.is('IDLE')) return;
    void this.list('start');
  }

  close(): void {
    if (this.cell.is('CLOSED')) return;
    this.epoch++;
    this.cell.set('CLOSED', 'close() called');
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.watch?.close();
    this.watch = undefined;
    this.removeAllListeners();
  }

  private async list(reason: string): Promise<void> {
    if (this.cell.is('CLOSED')) return;
    const epoch = ++this.epoch;
    this.watch?.close();
    this.watch = undefined;
    this.cell.set('LISTING', reason);
    try {
      const res = await this.client.getAll().prefix(this.keyPrefix).exec();
      if (epoch !== this.epoch) return;
      this.records.clear();
      for (const kv of res.kvs) this.apply('PUT', kv.key, kv.value);
      this.revision = res.header.revision;
      this.backoff.reset();
      this.watchFrom(epoch, BigInt(res.header.revision) + 1n);
      this.cell.set('WATCHING', 'listed', { revision: this.revision, endpoints: this.records.size });
      this.scheduleFlush();
    } catch (err) {
      if (epoch !== this.epoch) return;
      const delay = this.backoff.next();
      this.cell.set('RETRYING', `list failed: ${String(err)}`, { retryInMs: delay });
      // Arm the retry before telling listeners: one of them may close() us.
      this.retryTimer = setTimeout(() => void this.list('retry'), delay);
      // `error` is informative (the watcher retries by itself): never let a
      // missing listener turn it into a crash.
      if (this.listenerCount('error') > 0) this.emit('error', err instanceof Error ? err : new Error(String(err)));
    }
  }

  private watchFrom(epoch: number, startRevision: bigint): void {
    // ResumableWatch, not etcd3's own reconnect: etcd3 resumes from the
    // revision of the last response header, which can skip catch-up events
    // after a drop (see resumable-watch.ts). Ours resumes from the last
    // event applied + 1, so no event is lost or applied twice.
    const w = new ResumableWatch(this.client, prefixRange(this.keyPrefix), startRevision, this.log);
    this.watch = w;
    w.on('batch', (events: IEvent[], next: bigint) => {
      if (epoch !== this.epoch) return;
      for (const ev of events) this.apply(ev.type, ev.kv.key, ev.kv.value);
      this.revision = (next - 1n).toString();
      this.scheduleFlush();
    });
    w.on('error', (err: Error) => {
      if (epoch !== this.epoch) return;
      // History we needed was compacted while we were cut off: the set is
      // rebuilt from a fresh Get, replacing the old one whole.
      void this.list(`watch cannot resume: ${err.message}`);
    });
    w.start();
  }

  private apply(type: string, rawKey: Buffer, value: Buffer): void {
    const key = rawKey.toString('utf8');
    // etcd3 types say 'Delete', the wire (proto enum names) says 'DELETE'.
    if (type.toUpperCase() === 'DELETE') {
      this.records.delete(key);
      return;
    }
    const rec = decodeEndpoint(key, value);
    if (rec instanceof DecodeError) {
      this.log.warn({ event: 'watcher.bad_record', key, reason: rec.reason }, `skipping bad registry record ${key}: ${rec.reason}`);
      this.records.delete(key);
      return;
    }
    for (const w of rec.warnings) this.log.warn({ event: 'watcher.bad_metadata', key, reason: w }, `registry record ${key}: ${w}`);
    this.records.set(key, rec);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    const flush = () => {
      this.flushScheduled = false;
      this.flushTimer = undefined;
      if (this.cell.is('CLOSED')) return;
      this.lastFlushAt = performance.now();
      this.emit('update', this.snapshot());
    };
    const wait = this.lastFlushAt + this.minIntervalMs - performance.now();
    if (wait <= 0) setImmediate(flush);
    else this.flushTimer = setTimeout(flush, wait);
  }
}
