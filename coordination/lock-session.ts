import { EventEmitter } from 'node:events';
import type { Etcd3, Lease } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import { monotonicMs } from '../core/etcd-client';

/**
 * A session: one etcd lease kept alive, the counterpart of Go's
 * `concurrency.Session`. Every coordination key that must vanish when its
 * owner dies (lock waiters, election candidates, queue claims, barrier
 * participants) is written under a session's lease.
 *
 * Contract:
 * - `Session.open()` resolves once etcd granted the lease (rejects if not).
 * - `lost` is emitted at most once, when the lease is gone *or may be gone*:
 *   etcd said so (keepalive answered TTL 0, lease revoked by someone else), or
 *   no keepalive was confirmed for a whole TTL. The last case is declared at
 *   the earliest moment etcd could have expired the lease (the time the last
 *   confirmed keepalive was *sent* plus the TTL it granted), not at etcd3's
 *   own 2×TTL, so a lock holder or leader stops before anyone else can take
 *   over. After a self-declared loss the lease is revoked in the background,
 *   so a lease that was in fact still alive does not keep our keys around.
 * - `close()` revokes the lease (deleting every key under it); idempotent;
 *   no `lost` after it.
 *
 * - Time is monotonic (`monotonicMs()`, CLOCK_MONOTONIC): a wall clock stepped
 *   back or forth changes nothing here. `validUntil` is that proven deadline,
 *   and `renewed` (with it) is emitted each time a keepalive answer moves it.
 *
 * etcd3's Lease never re-grants after `lost`; neither does a Session: open a
 * new one (the owner decides whether to, e.g. an election campaigns again).
 */
export interface SessionEvents {
  /** The lease is gone or may be (see the contract); at most once. */
  lost: [err: SessionLostError];
  /** A keepalive answer moved the proven deadline (monotonic ms). */
  renewed: [validUntil: number];
}

export class Session extends EventEmitter<SessionEvents> {
  /** Decimal lease id, as etcd3 returns it. */
  readonly leaseId: string;
  /** Lease id in lower-case hex, as Go's `fmt.Sprintf("%x", lease)` writes it into keys. */
  readonly leaseHex: string;
  /** Resolves (never rejects) with the reason when the session is lost; never settles after close(). */
  readonly whenLost: Promise<Error>;
  private resolveLost!: (err: Error) => void;
  private state: 'ALIVE' | 'LOST' | 'CLOSED' = 'ALIVE';
  /** Monotonic time (ms, monotonicMs()) by which etcd may have expired the lease, as far as we can prove. */
  private expiresAt: number;
  /** Send times of keepalives not answered yet, oldest first. */
  private pending: number[] = [];
  private readonly timer: NodeJS.Timeout;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly lease: Lease,
    leaseId: string,
    readonly ttlSeconds: number,
    grantSentAt: number,
    private readonly log: Logger,
  ) {
    super();
    this.leaseId = leaseId;
    this.leaseHex = BigInt(leaseId).toString(16);
    this.expiresAt = grantSentAt + ttlSeconds * 1000;
    this.whenLost = new Promise((resolve) => (this.resolveLost = resolve));
    lease.on('keepaliveFired', () => this.pending.push(monotonicMs()));
    lease.on('keepaliveSucceeded', (res: { TTL: string }) => {
      const sentAt = this.pending.shift() ?? monotonicMs();
      const before = this.expiresAt;
      this.expiresAt = Math.max(this.expiresAt, sentAt + Number(res.TTL) * 1000);
      if (this.state === 'ALIVE' && this.expiresAt > before) this.emit('renewed', this.expiresAt);
    });
    // A broken stream drops the answers to what was sent on it.
    lease.on('keepaliveFailed', () => (this.pending = []));
    lease.on('lost', (err: Error) => this.markLost(`etcd reports the lease gone: ${err.message}`));
    // Checked often relative to the TTL: the margin between "may have expired"
    // and someone else taking over is this period at most.
    const every = Math.max(20, Math.min(250, (ttlSeconds * 1000) / 20));
    this.timer = setInterval(() => {
      if (this.state === 'ALIVE' && monotonicMs() >= this.expiresAt) this.markLost(`no keepalive confirmed within the ${ttlSeconds}s TTL`);
    }, every);
    this.timer.unref();
  }

  /** Grant a lease of `ttlSeconds` and keep it alive. */
  static async open(client: Etcd3, ttlSeconds: number, log: Logger = componentLogger('session')): Promise<Session> {
    const sentAt = monotonicMs();
    const lease = client.lease(ttlSeconds);
    // etcd3 emits `lost` on a failed grant as well; the rejection below reports it.
    lease.on('lost', () => undefined);
    let id: string;
    try {
      id = String(await lease.grant());
    } catch (err) {
      lease.release();
      throw err;
    }
    const s = new Session(lease, id, ttlSeconds, sentAt, log.child({ lease: BigInt(id).toString(16) }));
    s.log.debug({ event: 'session.granted', ttl: ttlSeconds }, 'lease granted');
    return s;
  }

  get alive(): boolean {
    return this.state === 'ALIVE' && monotonicMs() < this.expiresAt;
  }

  /** Monotonic deadline (monotonicMs()) until which the lease is proven alive; only meaningful while `alive`. */
  get validUntil(): number {
    return this.expiresAt;
  }

  /** Revoke the lease: every key under it is deleted. Idempotent; never throws. */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const wasAlive = this.state === 'ALIVE';
    this.state = 'CLOSED';
    clearInterval(this.timer);
    // A lost session already sent its revoke (markLost); do not wait on etcd again.
    if (!wasAlive) return;
    try {
      await this.lease.revoke();
      this.log.debug({ event: 'session.revoked' }, 'lease revoked');
    } catch (err) {
      // Not fatal: the keys go when the lease expires, at most a TTL from now.
      this.log.warn({ event: 'session.revoke_failed', err: String(err) }, `could not revoke lease; its keys expire within ${this.ttlSeconds}s`);
    }
  }

  private markLost(reason: string): void {
    if (this.state !== 'ALIVE') return;
    this.state = 'LOST';
    clearInterval(this.timer);
    const err = new SessionLostError(`lease ${this.leaseHex} lost: ${reason}`);
    this.log.warn({ event: 'session.lost', reason }, err.message);
    // If etcd does still hold it, drop it now so nobody waits on a zombie.
    void this.lease.revoke().catch(() => undefined);
    this.resolveLost(err);
    this.emit('lost', err);
  }
}

/** The session's lease is gone (or may be): whatever it protected is no longer ours. */
export class SessionLostError extends Error {
  override name = 'SessionLostError';
}
