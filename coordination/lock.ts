import type { Etcd3, IKeyValue } from 'etcd3';
import { Ticket, TicketLostError } from './lock-ticket';
import { TicketHolder, type TicketHolderOptions } from './lock-holder';
import { sleep } from './lock-wait';
import { Backoff } from '../core/backoff';

/** etcd said no (permissions, auth, a bad request): retrying cannot help, so a waiter reports it. */
function isRefusal(err: unknown): boolean {
  const name = err instanceof Error ? err.name || err.constructor.name : '';
  return !(err instanceof Error) || /PermissionDenied|Authentication|Unauthenticated|InvalidArgument|UserNotFound|RoleNotGranted/.test(`${name} ${err.constructor.name}`);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A distributed mutex on etcd with the key layout and algorithm of Go's
 * `concurrency.Mutex`, so it excludes `etcdctl lock NAME` and Go programs
 * both ways:
 *
 * - waiter key `NAME/<lease id hex>`, empty value, under a session lease,
 *   created by a txn guarded by `create_revision == 0`;
 * - the owner is the key with the lowest create revision under `NAME/`;
 * - blocking and fair: each waiter waits for the deletion of the key just
 *   before its own, so the lock passes in arrival (create revision) order;
 * - `tryAcquire()` is Go's TryLock: if someone is ahead, our key is deleted
 *   at once and LockHeldError names the holder.
 *
 * The fencing token is `revision`, the create revision of our key: strictly
 * increasing across successive holders, so a resource that remembers the
 * highest token it has seen can refuse a stale holder.
 *
 * Waiting rides out etcd stalls: if the session of a waiter that never held
 * the lock is lost (no keepalive answer within the TTL), the waiter opens a
 * new session and queues again at the back of the line; acquire() rejects
 * only on abort or release() (or at once for tryAcquire / a given session).
 *
 * Losing the lock: the session's lease expires (or may have: no keepalive
 * answer within the TTL), is revoked, or our key is deleted by hand. The lock
 * then goes to LOST and emits `lost` once; whoever works under it must stop.
 */
export type LockState = 'IDLE' | 'ACQUIRING' | 'WAITING' | 'HELD' | 'LOST' | 'RELEASED';

/** Lock name (keys under `NAME/` as for `etcdctl lock NAME`), TTL, optional session (never closed by the lock). */
export type LockOptions = TicketHolderOptions;

export interface AcquireOptions {
  /** Abort the wait: the waiter key is deleted and acquire() rejects with signal.reason. */
  signal?: AbortSignal;
}

/** tryAcquire() found the lock held. */
export class LockHeldError extends Error {
  override name = 'LockHeldError';
  constructor(
    readonly lockName: string,
    /** Key of the current holder, e.g. `NAME/694d8b2f1c3a5e07`. */
    readonly holderKey: string,
    /** Create revision of the holder's key (its fencing token). */
    readonly holderRevision: string,
  ) {
    super(`lock ${lockName} is held by ${holderKey} (revision ${holderRevision})`);
  }
}

/** The lock (or the wait for it) ended because our key or lease went away. */
export class LockLostError extends Error {
  override name = 'LockLostError';
}

export class EtcdMutex extends TicketHolder<LockState, { lost: [err: LockLostError] }> {
  private releasing: Promise<void> | undefined;

  constructor(client: Etcd3, opts: LockOptions) {
    super(client, opts, 'lock', 'IDLE');
  }

  /** Lease id of the session holding the lock, hex. */
  get leaseHex(): string | undefined {
    return this.ticket?.session.leaseHex;
  }

  /** Block until the lock is ours (fair: arrival order). */
  acquire(opts: AcquireOptions = {}): Promise<void> {
    return this.lock(false, opts.signal);
  }

  /** Take the lock if nobody holds or waits for it; else LockHeldError, leaving no key behind. */
  tryAcquire(): Promise<void> {
    return this.lock(true);
  }

  private async lock(tryOnly: boolean, signal?: AbortSignal): Promise<void> {
    if (!this.cell.is('IDLE', 'RELEASED', 'LOST')) throw new Error(`lock ${this.name} is ${this.state}; acquire() needs it IDLE, RELEASED or LOST`);
    this.releasing = undefined;
    this.ticket = undefined;
    this.cell.set('ACQUIRING', tryOnly ? 'tryAcquire() called' : 'acquire() called');
    const backoff = new Backoff(200, 2_000);
    let ticket: Ticket | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        ticket = await this.takeAndWait(tryOnly, signal);
        break;
      } catch (err) {
        const wasInLine = this.ticket !== undefined;
        await this.cleanup();
        // A waiter whose session went (an etcd stall longer than its TTL,
        // the member it talks to frozen) held nothing: it opens a new session
        // and queues again (at the back of the line) instead of failing; so
        // it does on any failure to reach etcd once it had been in line
        // (deadline, unavailable, no leader, etcd3's circuit breaker open on
        // a stuck member). Not: a first take that fails, a refusal (see
        // isRefusal), tryAcquire, or a session given by the caller.
        const transient = err instanceof TicketLostError || ((attempt > 0 || wasInLine) && !isRefusal(err));
        const requeue = transient && !tryOnly && this.opts.session === undefined && !signal?.aborted && !this.cell.is('RELEASED');
        if (requeue) {
          const delay = backoff.next();
          this.log.warn({ event: 'lock.requeue', err: errorText(err), retryInMs: delay }, `lost our place in line (${errorText(err)}); queuing again with a new session`);
          this.ticket = undefined;
          this.cell.set('ACQUIRING', 'waiter session lost; queuing again', { err: errorText(err) });
          try {
            await sleep(delay, signal);
            continue;
          } catch (abort) {
            err = abort;
          }
        }
        const why = err instanceof TicketLostError ? new LockLostError(`lock ${this.name}: ${err.message}`) : err;
        if (!this.cell.is('RELEASED')) this.cell.set(err instanceof TicketLostError ? 'LOST' : 'RELEASED', `acquire failed: ${errorText(err)}`);
        throw why;
      }
    }
    const held = ticket;
    held.once('lost', (reason: string) => this.onLost(held, reason));
    this.cell.set('HELD', 'ours is the lowest create revision', { key: held.key, revision: held.revision.toString() });
    if (held.lost) this.onLost(held, 'lost while acquiring');
  }

  /** One place in line: take a ticket and wait for our turn (rejects TicketLostError if the key or session goes first). */
  private async takeAndWait(tryOnly: boolean, signal?: AbortSignal): Promise<Ticket> {
    signal?.throwIfAborted();
    const ticket = await Ticket.take(this.client, this.prefix, await this.session(), '', this.log);
    this.ticket = ticket;
    // release() during the awaits above: give the fresh key up again.
    if (this.cell.is('RELEASED')) throw new Error(`lock ${this.name} released while acquiring`);
    if (!ticket.headAtTakeIsUs) {
      const head = ticket.headAtTake!;
      if (tryOnly) throw new LockHeldError(this.name, head.key.toString(), head.create_revision);
      this.cell.set('WAITING', 'someone is ahead', { key: ticket.key, revision: ticket.revision.toString(), holder: head.key.toString() });
      await ticket.waitTurn(signal, (ahead: IKeyValue) =>
        this.log.debug({ event: 'lock.wait', ahead: ahead.key.toString(), aheadRevision: ahead.create_revision }, 'waiting for the key ahead to go'),
      );
    }
    return ticket;
  }

  private onLost(ticket: Ticket, reason: string): void {
    if (ticket !== this.ticket || !this.cell.is('HELD')) return;
    this.cell.set('LOST', reason, { key: ticket.key, revision: ticket.revision.toString() });
    void this.cleanup();
    this.emit('lost', new LockLostError(`lock ${this.name} lost: ${reason}`));
  }

  /**
   * Give the lock up (or stop waiting): our key is deleted, and the session,
   * if the lock opened it, is revoked. Idempotent; never throws (if etcd is
   * unreachable the key goes when the lease expires).
   */
  release(): Promise<void> {
    if (!this.releasing) {
      if (this.cell.is('HELD', 'WAITING', 'ACQUIRING')) this.cell.set('RELEASED', 'release() called');
      this.releasing = this.cleanup();
    }
    return this.releasing;
  }
}
