import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, IWatchResponse, Watcher } from 'etcd3';
import { Backoff } from './backoff';
import { StateCell } from './state-cell';
import { componentLogger, type Logger } from './logger';
import { CompactedError, errorText } from './etcd-errors';

export { CompactedError };

/** A byte range of keys, `[start, end)` as etcd takes it (`end` empty: the single key `start`). */
export interface KeyRange {
  start: Buffer;
  end: Buffer;
}

/** The range of every key starting with `prefix` (a non-empty prefix). */
export function prefixRange(prefix: string | Buffer): KeyRange {
  const start = Buffer.from(prefix);
  if (start.length === 0) return { start: Buffer.from([0]), end: Buffer.from([0]) };
  // etcd's GetPrefixRangeEnd: increment the last byte that is not 0xff.
  const end = Buffer.from(start);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return { start, end: end.subarray(0, i + 1) };
    }
  }
  return { start, end: Buffer.from([0]) };
}

/**
 * CONNECTING: a watch from `nextRevision` is being opened. WATCHING: etcd
 * confirmed it. RETRYING: the stream dropped or etcd cancelled the watch;
 * reopening from `nextRevision` after a backoff. FAILED: history needed to
 * resume is compacted (final). CLOSED: close() was called (final).
 */
export type ResumableWatchState = 'IDLE' | 'CONNECTING' | 'WATCHING' | 'RETRYING' | 'FAILED' | 'CLOSED';

/**
 * Every change to a key range from a given revision on, each delivered
 * exactly once and in revision order, across stream drops: the contract a
 * subscriber needs ("no gap, no duplicate").
 *
 * Why not etcd3's own reconnect: its Watcher resumes from the `header.revision`
 * of the last response it saw, and the `created` response of a watch that
 * starts in the past carries the *current* revision. A stream that drops
 * after `created` but before the catch-up events arrive would resume past
 * them: a silent gap. So this class tracks the next undelivered revision
 * itself (the last delivered event's mod_revision + 1), and on every drop it
 * cancels etcd3's watcher and opens a fresh one from that revision, after a
 * jittered backoff.
 *
 * Contract:
 * - `batch(events, nextRevision)`: the events of one watch response not
 *   delivered before, in revision order; `nextRevision` is the first
 *   revision not yet delivered. Listeners run synchronously, so a listener
 *   that calls close() stops delivery at once.
 * - `error(CompactedError)`: etcd compacted history past `nextRevision`, so
 *   resuming would skip events. Final: nothing is skipped silently. Callers
 *   that only need the latest state (progress, monitor) re-list instead.
 * - `disconnected(Error)` / `connected()`: stream lost / watch (re)opened.
 * - No event fires after close(); close() is idempotent.
 */
/** Events of a ResumableWatch (see the contract above). */
export interface ResumableWatchEvents {
  batch: [events: IEvent[], nextRevision: bigint];
  error: [err: CompactedError];
  disconnected: [err: Error];
  connected: [];
}

export class ResumableWatch extends EventEmitter<ResumableWatchEvents> {
  private readonly cell: StateCell<ResumableWatchState>;
  private readonly backoff = new Backoff(100, 1_000);
  private watcher: Watcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private next: bigint;
  /** Bumped whenever a watcher is abandoned, so its late callbacks do nothing. */
  private epoch = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly range: KeyRange,
    /** The first revision to deliver (>= 1). */
    fromRevision: bigint,
    private readonly log: Logger = componentLogger('resumable-watch', { key: range.start.toString() }),
  ) {
    super();
    if (fromRevision < 1n) throw new RangeError(`fromRevision must be >= 1, got ${fromRevision}`);
    this.next = fromRevision;
    this.cell = new StateCell<ResumableWatchState>('IDLE', this.log, 'watch');
  }

  get state(): ResumableWatchState {
    return this.cell.value;
  }

  /** The first revision not delivered yet: where a resumed watch starts. */
  get nextRevision(): bigint {
    return this.next;
  }

  start(): this {
    if (this.cell.is('IDLE')) this.open('start');
    return this;
  }

  close(): void {
    if (this.cell.is('CLOSED')) return;
    this.cell.set('CLOSED', 'close() called');
    this.drop();
    this.removeAllListeners();
  }

  private open(reason: string): void {
    const epoch = ++this.epoch;
    this.cell.set('CONNECTING', reason, { fromRevision: this.next.toString() });
    // A single key is watched with `.key()`: an empty range_end on the wire
    // means "every key >= start" to etcd's range code (see command-kv.ts).
    const b = this.client.watch();
    const w = (this.range.end.length ? b.inRange({ start: this.range.start, end: this.range.end }) : b.key(this.range.start)).startRevision(this.next.toString()).watcher();
    this.watcher = w;
    w.on('connected', () => {
      if (epoch !== this.epoch) return;
      this.backoff.reset();
      this.cell.set('WATCHING', 'etcd accepted the watch', { fromRevision: this.next.toString() });
      this.emit('connected');
    });
    w.on('data', (res: IWatchResponse) => {
      if (epoch !== this.epoch) return;
      this.onData(res);
    });
    w.on('disconnected', (err: unknown) => {
      if (epoch !== this.epoch) return;
      this.log.warn({ event: 'watch.disconnected', err: errorText(err), nextRevision: this.next.toString() }, `watch stream lost; resuming from revision ${this.next}`);
      this.emit('disconnected', err instanceof Error ? err : new Error(String(err)));
      this.retry('stream lost');
    });
    w.on('error', (err: unknown) => {
      if (epoch !== this.epoch) return;
      // etcd cancelled the watch; the usual reason is compaction past `next`.
      this.drop();
      void this.checkCompacted(err);
    });
  }

  private onData(res: IWatchResponse): void {
    // A response without events is a progress notification. Its revision is
    // deliberately not used to move `next`: progress notifications have been
    // out of step with the event stream in etcd releases (etcd-io/etcd#15220,
    // #17507; our etcd is 3.4.23), and trusting one that ran ahead would skip
    // events. The cost: on a quiet range, a resume after a compaction reports
    // CompactedError although nothing may have been lost; it never hides a loss.
    if (res.events.length === 0) return;
    const floor = this.next;
    const fresh: IEvent[] = res.events.filter((ev) => BigInt(ev.kv.mod_revision) >= floor);
    if (fresh.length === 0) return;
    this.next = BigInt(fresh[fresh.length - 1].kv.mod_revision) + 1n;
    this.emit('batch', fresh, this.next);
  }

  /** Abandon the current watcher (if any) and any pending retry. */
  private drop(): void {
    this.epoch++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const w = this.watcher;
    this.watcher = undefined;
    // Detaching while disconnected only removes it from etcd3's list, so
    // etcd3 will not resume it from its own (possibly wrong) revision.
    if (w) void w.cancel().catch(() => undefined);
  }

  private retry(reason: string): void {
    this.drop();
    const delay = this.backoff.next();
    this.cell.set('RETRYING', reason, { retryInMs: delay, nextRevision: this.next.toString() });
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.cell.is('RETRYING')) this.open('retry');
    }, delay);
  }

  /**
   * The watch cancel response does not reach us with its compact_revision
   * (etcd3 turns it into a bare "Watcher canceled" error), so ask etcd
   * directly: a range read at `next` fails with "required revision has been
   * compacted" exactly when a watch from `next` would be cancelled for it.
   */
  private async checkCompacted(cancelErr: unknown): Promise<void> {
    const epoch = this.epoch;
    this.cell.set('RETRYING', `etcd cancelled the watch: ${errorText(cancelErr)}`, { nextRevision: this.next.toString() });
    try {
      await this.client.kv.range({ key: this.range.start, range_end: this.range.end.length ? this.range.end : undefined, revision: this.next.toString(), count_only: true });
    } catch (err) {
      if (epoch !== this.epoch) return;
      if (/compacted/i.test(errorText(err))) {
        const failure = new CompactedError(this.next.toString());
        this.cell.set('FAILED', failure.message, { nextRevision: this.next.toString() });
        this.emit('error', failure);
        return;
      }
      // "future revision" (nothing happened yet) or etcd unreachable: not compaction.
    }
    if (epoch !== this.epoch) return;
    this.retry(`watch cancelled: ${errorText(cancelErr)}`);
  }
}
