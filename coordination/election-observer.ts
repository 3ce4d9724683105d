import { EventEmitter } from 'node:events';
import type { Etcd3, IKeyValue } from 'etcd3';
import type { Logger } from '../core/logger';
import { ListWatch, isDelete } from '../core/list-watch';
import { prefixRange } from '../core/resumable-watch';

/** Who leads an election: the candidate key with the lowest create revision. */
export interface LeaderInfo {
  /** `NAME/<lease id hex>` */
  key: string;
  /** The proposal (Go: the campaign value). */
  value: string;
  createRevision: string;
}

export interface ElectionObserverEvents {
  leader: [leader: LeaderInfo | undefined];
  resync: [reason: string];
}

/**
 * Follows the leader of an election, as Go's `Election.Observe` and
 * `etcdctl elect -l` do, for candidates written by us, by etcdctl or by Go.
 *
 * It mirrors the candidates under `NAME/` on the one ListWatch (list, then
 * watch from the list's revision + 1) and recomputes the leader after every
 * event, so every leadership change is reported in revision order, none
 * skipped, without a read per event. Events:
 * - `leader` (LeaderInfo | undefined): after start(), the current leader,
 *   then on every change of leader key or of the leader's value; undefined
 *   when the last candidate goes;
 * - `resync` (reason): the watch could not resume (etcd compacted past it);
 *   the mirror was re-listed, and changes inside the gap may have been
 *   skipped. A merely dropped stream resumes from the last event seen, so
 *   nothing is skipped then.
 */
export class ElectionObserver extends EventEmitter<ElectionObserverEvents> {
  private readonly candidates = new Map<string, { createRevision: bigint; value: string }>();
  private readonly lw: ListWatch;
  private last: LeaderInfo | undefined;
  private closed = false;
  private started = false;
  /** Set by the first listing; later ones re-list after a watch that could not resume. */
  private listed = false;

  constructor(
    client: Etcd3,
    readonly name: string,
    private readonly log: Logger,
  ) {
    super();
    this.lw = new ListWatch(client, prefixRange(`${name}/`), log, { what: 'observer' });
    this.lw.on('list', (kvs, _revision, reason) => {
      const first = !this.listed;
      this.listed = true;
      if (!first) {
        this.log.warn({ event: 'election.observe_resync', err: reason }, 'election watch cannot resume; listed again');
        this.emit('resync', reason);
      }
      this.candidates.clear();
      for (const kv of kvs) this.apply('put', kv);
      this.report(first);
    });
    this.lw.on('events', (events) => {
      for (const ev of events) {
        if (this.closed) return;
        this.apply(isDelete(ev) ? 'delete' : 'put', ev.kv);
        this.report(false);
      }
    });
  }

  /** The leader as of the last event seen. */
  get current(): LeaderInfo | undefined {
    return this.last;
  }

  /**
   * List and start watching; resolves once the first `leader` event was
   * emitted. Rejects (and closes) if etcd does not answer the first Get.
   */
  start(): Promise<void> {
    if (this.started) return Promise.reject(new Error('ElectionObserver.start() called twice'));
    this.started = true;
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        this.lw.off('list', onList);
        void this.close();
        reject(err);
      };
      const onList = () => {
        this.lw.off('error', onError);
        resolve();
      };
      // Registered after the constructor's handler, so `leader` comes first.
      this.lw.once('list', onList);
      this.lw.once('error', onError);
      this.lw.start();
    });
  }

  private apply(type: 'put' | 'delete', kv: IKeyValue): void {
    const key = kv.key.toString();
    if (type === 'delete') this.candidates.delete(key);
    else this.candidates.set(key, { createRevision: BigInt(kv.create_revision), value: kv.value.toString() });
  }

  private report(force: boolean): void {
    let best: LeaderInfo | undefined;
    let bestRev = 0n;
    for (const [key, c] of this.candidates) {
      if (!best || c.createRevision < bestRev) {
        best = { key, value: c.value, createRevision: c.createRevision.toString() };
        bestRev = c.createRevision;
      }
    }
    const prev = this.last;
    const same = prev === best || (prev && best && prev.key === best.key && prev.createRevision === best.createRevision && prev.value === best.value);
    if (same && !force) return;
    this.last = best;
    this.log.debug({ event: 'election.observed', leader: best?.key, value: best?.value }, 'leader observed');
    this.emit('leader', best);
  }

  /** Stop observing; no events after this. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.lw.close();
    this.removeAllListeners();
  }
}
