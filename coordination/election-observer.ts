import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import type { Logger } from '../core/logger';
import { ResumableWatch, prefixRange } from '../core/resumable-watch';
import { sleep } from './lock-wait';

/** Who leads an election: the candidate key with the lowest create revision. */
export interface LeaderInfo {
  /** `NAME/<lease id hex>` */
  key: string;
  /** The proposal (Go: the campaign value). */
  value: string;
  createRevision: string;
}

/**
 * Follows the leader of an election, as Go's `Election.Observe` and
 * `etcdctl elect -l` do, for candidates written by us, by etcdctl or by Go.
 *
 * It mirrors the candidates under `NAME/` (list, then watch from the list's
 * revision + 1) and recomputes the leader after every event, so every
 * leadership change is reported in revision order, none skipped, without a
 * read per event. Events:
 * - `leader` (LeaderInfo | undefined): after start(), the current leader,
 *   then on every change of leader key or of the leader's value; undefined
 *   when the last candidate goes;
 * - `resync` (reason): the watch could not resume (etcd compacted past it);
 *   the mirror was re-listed, and changes inside the gap may have been
 *   skipped. A merely dropped stream resumes from the last event seen
 *   (ResumableWatch), so nothing is skipped then.
 */
export class ElectionObserver extends EventEmitter {
  private readonly prefix: string;
  private readonly candidates = new Map<string, { createRevision: bigint; value: string }>();
  private watch: ResumableWatch | undefined;
  private last: LeaderInfo | undefined;
  private closed = false;
  private started = false;

  constructor(
    private readonly client: Etcd3,
    readonly name: string,
    private readonly log: Logger,
  ) {
    super();
    this.prefix = `${name}/`;
  }

  /** The leader as of the last event seen. */
  get current(): LeaderInfo | undefined {
    return this.last;
  }

  /** List and start watching; resolves once the first `leader` event was emitted. */
  async start(): Promise<void> {
    if (this.started) throw new Error('ElectionObserver.start() called twice');
    this.started = true;
    await this.sync(true);
  }

  private async sync(first: boolean): Promise<void> {
    const res = await this.client.getAll().prefix(this.prefix).exec();
    if (this.closed) return;
    this.candidates.clear();
    for (const kv of res.kvs) this.apply('put', kv);
    const w = new ResumableWatch(this.client, prefixRange(this.prefix), BigInt(res.header.revision) + 1n, this.log);
    this.watch = w;
    w.on('batch', (events: IEvent[]) => {
      // etcd3 types say 'Delete', the wire (proto enum names) says 'DELETE'.
      for (const ev of events) this.onEvent(String(ev.type).toUpperCase() === 'DELETE' ? 'delete' : 'put', ev.kv);
    });
    w.once('error', (err: Error) => void this.resync(w, String(err)));
    w.start();
    this.report(first);
  }

  private onEvent(type: 'put' | 'delete', kv: IKeyValue): void {
    if (this.closed) return;
    this.apply(type, kv);
    this.report(false);
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

  private async resync(w: ResumableWatch, reason: string): Promise<void> {
    if (this.closed || w !== this.watch) return;
    this.log.warn({ event: 'election.observe_resync', err: reason }, 'election watch cannot resume; listing again');
    w.close();
    this.emit('resync', reason);
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        return await this.sync(false);
      } catch (err) {
        await sleep(Math.min(1000, 100 * 2 ** attempt));
      }
    }
  }

  /** Stop observing; no events after this. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    this.watch = undefined;
    this.removeAllListeners('leader');
  }
}
