import { EventEmitter } from 'node:events';
import type { Etcd3, IKeyValue } from 'etcd3';
import type { Logger } from '../core/logger';
import type { Session } from './lock-session';
import { KeyGuard, waitDeletes } from './lock-wait';

/**
 * A ticket: one participant's place in line under a prefix, the scheme shared
 * by Go's `concurrency.Mutex` and `concurrency.Election` (and so by
 * `etcdctl lock` and `etcdctl elect`):
 *
 * - key `<prefix><lease id in hex>` (the prefix ends in `/`), written under
 *   the session's lease by a txn guarded by `create_revision == 0`; the same
 *   txn reads the head of the line so the uncontended case costs one RPC;
 * - the key's create revision is the place in line, and the head of the line
 *   (lowest create revision under the prefix) is the owner / leader;
 * - a participant waits only for the deletion of the key just ahead of it
 *   (Go's waitDeletes), so arrivals are served in order and a release wakes
 *   exactly one waiter.
 *
 * A ticket is `lost` (event, once) when its key disappears (lease expired,
 * revoked, deleted by hand) or its session is lost; from then on it protects
 * nothing. Lost tickets, and tickets given up, are deleted with a txn that
 * checks our create revision, so a key re-created by someone else is never
 * touched.
 */
export class Ticket extends EventEmitter<{ lost: [reason: string] }> {
  private readonly guard: KeyGuard;
  private lostReason: string | undefined;
  private closed = false;
  /** Aborts a waitTurn() in progress when the ticket is closed (given up). */
  private readonly closeAc = new AbortController();
  private readonly onSessionLost = (err: Error) => this.markLost(err.message);

  private constructor(
    private readonly client: Etcd3,
    readonly prefix: string,
    readonly key: string,
    /** Create revision of our key: our place in line, and the fencing token of a lock. */
    readonly revision: bigint,
    /** Revision of the take txn (the key existed then). */
    readonly takenAt: string,
    /** Head of the line as the take txn saw it. */
    readonly headAtTake: IKeyValue | undefined,
    readonly session: Session,
    private readonly log: Logger,
  ) {
    super();
    this.guard = new KeyGuard(client, key, takenAt, log);
    this.guard.once('gone', (reason: string) => this.markLost(reason));
    session.once('lost', this.onSessionLost);
    if (!session.alive) this.markLost('session already lost');
  }

  /** Write our key under `prefix` (idempotent for a session: a retried txn finds our own key). */
  static async take(client: Etcd3, prefix: string, session: Session, value: string, log: Logger): Promise<Ticket> {
    const key = `${prefix}${session.leaseHex}`;
    const head = () => client.getAll().prefix(prefix).sort('Create', 'Ascend').limit(1);
    const res = await client
      .if(key, 'Create', '==', 0)
      .then(client.put(key).value(value).lease(session.leaseId), head())
      .else(client.get(key), head())
      .commit();
    let revision: bigint;
    if (res.succeeded) {
      revision = BigInt(res.header.revision);
    } else {
      // Our session already has a key here (a retry of a txn whose answer was
      // lost, or a shared session): keep its place, as Go does.
      const mine = res.responses[0].response_range!.kvs[0];
      revision = BigInt(mine.create_revision);
      if (mine.value.toString() !== value) {
        const upd = await client.if(key, 'Create', '==', revision.toString()).then(client.put(key).value(value).lease(session.leaseId)).commit();
        if (!upd.succeeded) throw new TicketLostError(`key ${key} vanished while taking a ticket`);
      }
    }
    const headKv = res.responses[1].response_range!.kvs[0] as IKeyValue | undefined;
    return new Ticket(client, prefix, key, revision, res.header.revision, headKv, session, log);
  }

  /** True if, when taken, nobody was ahead of us. */
  get headAtTakeIsUs(): boolean {
    return !this.headAtTake || BigInt(this.headAtTake.create_revision) === this.revision;
  }

  get lost(): boolean {
    return this.lostReason !== undefined;
  }

  /**
   * Wait until we are the head of the line: every key created before ours is
   * gone, and ours is still there. Rejects with TicketLostError if our key or
   * session goes first, or with `signal.reason` on abort.
   */
  async waitTurn(signal?: AbortSignal, onWait?: (ahead: IKeyValue) => void): Promise<void> {
    if (this.lostReason) throw new TicketLostError(this.lostReason);
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal!.reason);
    const onLost = (reason: string) => ac.abort(new TicketLostError(reason));
    const onClose = () => ac.abort(this.closeAc.signal.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    this.closeAc.signal.addEventListener('abort', onClose, { once: true });
    this.once('lost', onLost);
    try {
      if (signal?.aborted) ac.abort(signal.reason);
      if (this.closed) ac.abort(this.closeAc.signal.reason);
      await waitDeletes(this.client, this.prefix, this.revision - 1n, ac.signal, onWait);
      // Go re-reads its key here: a session that expired while we waited
      // must not be mistaken for a turn.
      const now = await this.client.get(this.key).exec();
      const kv = now.kvs[0];
      if (!kv || BigInt(kv.create_revision) !== this.revision) {
        this.markLost(`key ${this.key} is gone`);
        throw new TicketLostError(this.lostReason!);
      }
      if (this.lostReason) throw new TicketLostError(this.lostReason);
    } catch (err) {
      throw ac.signal.aborted ? ac.signal.reason : err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.closeAc.signal.removeEventListener('abort', onClose);
      this.off('lost', onLost);
    }
  }

  /** Change our key's value (election proclaim); fails if the key is no longer ours. */
  async setValue(value: string): Promise<void> {
    const res = await this.client
      .if(this.key, 'Create', '==', this.revision.toString())
      .then(this.client.put(this.key).value(value).lease(this.session.leaseId))
      .commit();
    if (!res.succeeded) {
      this.markLost(`key ${this.key} is gone`);
      throw new TicketLostError(this.lostReason!);
    }
  }

  /** Stop guarding (no `lost` after this) without touching the key. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    if (!this.closeAc.signal.aborted) this.closeAc.abort(new Error(`ticket ${this.key} given up`));
    this.session.off('lost', this.onSessionLost);
    await this.guard.close();
  }

  /**
   * close(), then delete our key if it is still ours. Does not end the
   * session (its owner does). Rejects only if etcd cannot be reached, in
   * which case the key goes with the lease.
   */
  async discard(): Promise<void> {
    await this.close();
    if (!this.session.alive) return;
    await this.client.if(this.key, 'Create', '==', this.revision.toString()).then(this.client.delete().key(this.key)).commit();
  }

  private markLost(reason: string): void {
    if (this.lostReason !== undefined || this.closed) return;
    this.lostReason = reason;
    this.log.warn({ event: 'ticket.lost', key: this.key, revision: this.revision.toString(), reason }, `lost ${this.key}: ${reason}`);
    void this.guard.close();
    this.emit('lost', reason);
  }
}

/** Our key or our session went away: whatever the ticket stood for is gone. */
export class TicketLostError extends Error {
  override name = 'TicketLostError';
}
