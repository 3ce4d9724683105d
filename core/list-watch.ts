import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { Backoff } from './backoff';
import { StateCell } from './state-cell';
import { componentLogger, type Logger } from './logger';
import { errorText } from './etcd-errors';
import { ResumableWatch, type KeyRange } from './resumable-watch';

/**
 * IDLE: not started. LISTING: the Get is under way. WATCHING: a watch from
 * the listed revision + 1 is open (or resuming by itself after a drop).
 * RETRYING: etcd did not answer the Get; listing again after a backoff.
 * CLOSED: final.
 */
export type ListWatchState = 'IDLE' | 'LISTING' | 'WATCHING' | 'RETRYING' | 'CLOSED';

/** What a ListWatch tells its owner; listeners run synchronously. */
export interface ListWatchEvents {
  /**
   * A complete listing of the range at `revision`: it replaces whatever the
   * owner built from earlier listings and events. The first comes after
   * start(); later ones follow a watch that could not resume (`reason`).
   */
  list: [kvs: IKeyValue[], revision: string, reason: string];
  /** Changes after the last listing, each once, in revision order; `revision` is the last one's. */
  events: [events: IEvent[], revision: string];
  /** A Get failed; the ListWatch retries by itself. Emitted only when someone listens. */
  error: [err: Error];
  state: [next: ListWatchState, previous: ListWatchState, reason: string];
}

/**
 * The one list-and-watch loop everything that mirrors a key range stands on
 * (endpoint watcher, progress, election observer, monitor), as etcd's Go
 * `naming/resolver` does it: a Get of the range, then a watch from the Get's
 * revision + 1, so no change between the two is missed or applied twice.
 *
 * - A dropped stream resumes from the last delivered event + 1
 *   (ResumableWatch), so nothing is skipped or repeated.
 * - A watch that cannot resume (etcd compacted the history it needs) is
 *   answered by a fresh Get and watch: a new `list`, replacing the old
 *   state whole. Changes inside the gap are not replayed; only owners that
 *   need the latest state (not every change) should use this.
 * - A failed Get is retried with jittered backoff; while etcd is
 *   unreachable nothing is emitted, so the owner's last state stands.
 * - Every transition goes through one StateCell (`OLD -> NEW` in the log).
 * - No event fires after close(); close() is idempotent.
 */
export class ListWatch extends EventEmitter<ListWatchEvents> {
  private readonly cell: StateCell<ListWatchState>;
  private readonly backoff: Backoff;
  private watch: ResumableWatch | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Bumped on every (re)list and on close, so callbacks of an abandoned round do nothing. */
  private epoch = 0;

  constructor(
    private readonly client: Etcd3,
    readonly range: KeyRange,
    private readonly log: Logger = componentLogger('list-watch', { key: range.start.toString() }),
    opts: { backoffMs?: [initial: number, max: number]; what?: string } = {},
  ) {
    super();
    const [initial, max] = opts.backoffMs ?? [100, 1_000];
    this.backoff = new Backoff(initial, max);
    this.cell = new StateCell<ListWatchState>('IDLE', this.log, opts.what ?? 'watcher');
    this.cell.on('change', (next: ListWatchState, prev: ListWatchState, reason: string) => this.emit('state', next, prev, reason));
  }

  get state(): ListWatchState {
    return this.cell.value;
  }

  start(): this {
    if (this.cell.is('IDLE')) void this.list('start');
    return this;
  }

  close(): void {
    if (this.cell.is('CLOSED')) return;
    this.epoch++;
    this.cell.set('CLOSED', 'close() called');
    if (this.retryTimer) clearTimeout(this.retryTimer);
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
    let res;
    try {
      res = await this.client.kv.range({ key: this.range.start, range_end: this.range.end.length ? this.range.end : undefined });
    } catch (err) {
      if (epoch !== this.epoch) return;
      const delay = this.backoff.next();
      this.cell.set('RETRYING', `list failed: ${errorText(err)}`, { retryInMs: delay });
      // Armed before telling listeners: one of them may close() us.
      this.retryTimer = setTimeout(() => void this.list('retry'), delay);
      if (this.listenerCount('error') > 0) this.emit('error', err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (epoch !== this.epoch) return;
    this.backoff.reset();
    this.watchFrom(epoch, BigInt(res.header.revision) + 1n);
    this.cell.set('WATCHING', 'listed', { revision: res.header.revision, keys: res.kvs.length });
    this.emit('list', res.kvs, res.header.revision, reason);
  }

  private watchFrom(epoch: number, from: bigint): void {
    const w = new ResumableWatch(this.client, this.range, from, this.log);
    this.watch = w;
    w.on('batch', (events: IEvent[], next: bigint) => {
      if (epoch === this.epoch) this.emit('events', events, (next - 1n).toString());
    });
    w.on('error', (err: Error) => {
      if (epoch === this.epoch) void this.list(`watch cannot resume: ${err.message}`);
    });
    w.start();
  }
}

/** etcd3's types say 'Delete'; the wire (proto enum names) says 'DELETE'. */
export function isDelete(ev: IEvent): boolean {
  return String(ev.type).toUpperCase() === 'DELETE';
}
