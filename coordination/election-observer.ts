import { EventEmitter } from 'node:events';
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import type { Logger } from '../balancer/logger';
import { cancelWatcher, sleep } from './lock-wait';

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
 * - `resync` (reason): the watch was cancelled by etcd (e.g. compaction); the
 *   mirror was re-listed, and changes inside the gap may have been skipped.
 */
export class ElectionObserver extends EventEmitter {
  private readonly prefix: string;
  private readonly candidates = new Map<string, { createRevision: bigint; value: string }>();
  private watcher: Watcher | undefined;
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
    const w = this.client.watch().prefix(this.prefix).startRevision((BigInt(res.header.revision) + 1n).toString()).watcher();
    this.watcher = w;
    w.on('put', (kv: IKeyValue) => this.onEvent('put', kv));
    w.on('delete', (kv: IKeyValue) => this.onEvent('delete', kv));
    w.once('error', (err: Error) => void this.resync(w, String(err)));
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

  private async resync(w: Watcher, reason: string): Promise<void> {
    if (this.closed || w !== this.watcher) return;
    this.log.warn({ event: 'election.observe_resync', err: reason }, 'election watch cancelled by etcd; listing again');
    void cancelWatcher(w);
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
    const w = this.watcher;
    this.watcher = undefined;
    this.removeAllListeners('leader');
    if (w) await cancelWatcher(w);
  }
}
