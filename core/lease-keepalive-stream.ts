import type { Etcd3, IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { ClientClosedError, EtcdInvalidAuthTokenError, EtcdLeaseInvalidError, GRPCUnauthenticatedError, castGrpcError } from 'etcd3/lib/errors';
import type { KeptLease, LeaseKeepAlive, LeaseKeepAliveStats } from './lease-keepalive';
import { Backoff } from './backoff';
import { monotonicMs } from './etcd-client';
import { componentLogger, type Logger } from './logger';

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** Answers not yet received, per lease, kept at most (a lease is lost long before that many go unanswered). */
const MAX_PENDING = 8;
/** Keepalives due within this much of each other go out together (one timer wake-up, one socket write). */
const MAX_COALESCE_MS = 250;
/** A stream with a request unanswered this long (at least; TTL/3 of the shortest lease if more) is given up as stuck. */
const MIN_STUCK_MS = 1_000;
/** The timer never fires sooner than this after being set: keep() calls in a burst share one wake-up. */
const MIN_TIMER_MS = 10;

interface Entry {
  readonly id: string;
  readonly ttlMs: number;
  readonly intervalMs: number;
  readonly coalesceMs: number;
  /** Monotonic ms until which etcd holds the lease for sure (last answered send + TTL). */
  validUntil: number;
  /** Monotonic ms at which the lease is reported lost without a newer answer (last answer + TTL, Go's deadline). */
  deadline: number;
  /** When the next keepalive is due (monotonic ms). */
  nextSendAt: number;
  /** Send times of the keepalives on the current stream not answered yet, oldest first. */
  pending: number[];
  readonly lost: (err: Error) => void;
}

const keepers = new WeakMap<Etcd3, LeaseKeepAliveStream>();

/** The one keeper of `client`'s leases (created on first use; lives as long as the client). */
export function leaseKeepAliveFor(client: Etcd3): LeaseKeepAliveStream {
  let k = keepers.get(client);
  if (!k) {
    k = new LeaseKeepAliveStream(client);
    keepers.set(client, k);
  }
  return k;
}

/**
 * Every lease of one etcd3 client kept alive over ONE LeaseKeepAlive
 * stream (the contract is lease-keepalive.ts's), the design of Go's
 * clientv3 `lessor` (lease.go): a map lease id -> keepalive state, one
 * bidi stream, a keepalive per lease every TTL/3, a deadline per lease.
 * The stream is etcd3's own (`client.leaseClient.leaseKeepAlive()`), so it
 * gets the client's auth token, TLS, host choice and circuit breakers.
 *
 * - The stream is opened when the first lease is kept and closed (half-close,
 *   then cancel) when the last one goes; while it is open every lease's
 *   keepalive goes on it. Keepalives due within min(250 ms, TTL/12) of each
 *   other are written together: after one such batch their schedules are
 *   aligned, so a thousand leases granted together cost a few timer wake-ups
 *   per interval, not a thousand.
 * - Deadline, as Go's: a lease is lost once the TTL etcd last answered has
 *   passed since that answer (since keep() before the first). `validUntil`
 *   is the stricter proof: the send time of its last answered keepalive
 *   plus that TTL (answers on a stream come in order, so the oldest
 *   unanswered send time of that lease is the one answered). One timer
 *   serves every lease: the earliest of the next keepalive due, the next
 *   deadline, and the stuck check below.
 * - A stream that breaks (an error or end from etcd: a member killed or
 *   restarted, the client's channels reset) is opened again after a
 *   full-jitter backoff (100 ms doubling to 1 s, reset by an answer), so a
 *   client asks for at most about one stream a second however many leases it
 *   holds; answers in flight on the old stream are dropped and every lease
 *   gets a keepalive at once on the new one.
 * - A stream with a keepalive unanswered for max(1 s, TTL/3 of the shortest
 *   lease) is stuck (a frozen member: TCP is up, nobody answers; gRPC's own
 *   keepalive would take 15 s): it is ended and cancelled, and the next
 *   stream opened after the backoff, on a member etcd3 picks at random.
 * - The deadline is enforced whether or not a stream is open: with every
 *   member frozen, each lease is reported lost at its deadline, and once none
 *   is left the stream is closed (no stream is opened for nobody).
 * - A closed client (etcd3 throws ClientClosedError) reports every lease
 *   lost and keeps nothing more; an "invalid auth token" refusal drops
 *   etcd3's cached token first, so the next stream authenticates afresh.
 */
export class LeaseKeepAliveStream implements LeaseKeepAlive {
  private readonly leases = new Map<string, Entry>();
  private readonly log: Logger;
  private stream: KeepAliveStream | undefined;
  /** Bumped whenever the stream is replaced or dropped: events of an older one are ignored. */
  private streamGen = 0;
  private opening = false;
  private reopenTimer: NodeJS.Timeout | undefined;
  private readonly backoff = new Backoff(100, 1_000);
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  /** Keepalives written on the current stream and not answered yet, all leases together. */
  private outstanding = 0;
  /** When the current stream last made progress: an answer, or the first request after none was waiting. */
  private progressAt = 0;
  private clientClosed: Error | undefined;
  private readonly counters = { streamsOpened: 0, streamFailures: 0, sent: 0, confirmed: 0, lost: 0 };

  constructor(
    private readonly client: Etcd3,
    log?: Logger,
  ) {
    this.log = log ?? componentLogger('lease-keepalive');
  }

  get stats(): LeaseKeepAliveStats {
    return { leases: this.leases.size, streamOpen: this.stream !== undefined, ...this.counters };
  }

  keep(id: string, ttlSeconds: number, grantSentAt: number, lost: (err: Error) => void): KeptLease {
    const ttlMs = ttlSeconds * 1000;
    const intervalMs = ttlMs / 3;
    const now = monotonicMs();
    const entry: Entry = { id, ttlMs, intervalMs, coalesceMs: Math.min(MAX_COALESCE_MS, intervalMs / 4), validUntil: grantSentAt + ttlMs, deadline: now + ttlMs, nextSendAt: now, pending: [], lost };
    const handle: KeptLease = {
      id,
      get validUntil() {
        return entry.validUntil;
      },
      release: () => {
        if (this.leases.get(id) !== entry) return;
        this.leases.delete(id);
        if (this.leases.size === 0) this.closeStream();
      },
    };
    if (this.clientClosed) {
      const err = this.clientClosed;
      queueMicrotask(() => lost(err));
      return handle;
    }
    this.leases.set(id, entry);
    this.ensureStream();
    this.schedule(entry.nextSendAt);
    return handle;
  }

  private ensureStream(): void {
    if (this.stream || this.opening || this.reopenTimer || this.clientClosed || this.leases.size === 0) return;
    this.opening = true;
    this.client.leaseClient.leaseKeepAlive().then(
      (stream) => {
        this.opening = false;
        this.attach(stream);
      },
      (err: unknown) => {
        this.opening = false;
        this.streamFailed(castGrpcError(err as Error), 'could not open');
      },
    );
  }

  private attach(stream: KeepAliveStream): void {
    if (this.leases.size === 0 || this.clientClosed) {
      endAndCancel(stream);
      return;
    }
    const gen = ++this.streamGen;
    this.stream = stream;
    this.outstanding = 0;
    this.counters.streamsOpened++;
    const now = monotonicMs();
    for (const e of this.leases.values()) {
      e.pending = [];
      e.nextSendAt = now;
    }
    stream.on('data', (res: ILeaseKeepAliveResponse) => gen === this.streamGen && this.answered(res));
    stream.on('error', (err: Error) => gen === this.streamGen && this.streamFailed(castGrpcError(err), 'broke'));
    stream.on('end', () => gen === this.streamGen && this.streamFailed(new Error('etcd ended the stream'), 'ended'));
    this.log.debug({ event: 'lease_keepalive.stream_open', leases: this.leases.size, streams: this.counters.streamsOpened }, 'LeaseKeepAlive stream open');
    this.schedule(now);
  }

  private answered(res: ILeaseKeepAliveResponse): void {
    const now = monotonicMs();
    this.progressAt = now;
    if (this.outstanding > 0) this.outstanding--;
    this.backoff.reset();
    const e = this.leases.get(String(res.ID));
    if (!e) return; // released meanwhile
    const sentAt = e.pending.shift();
    const ttl = Number(res.TTL);
    if (!(ttl > 0)) {
      this.lose(e, new EtcdLeaseInvalidError(String(res.ID)));
      this.closeIfEmpty();
      return;
    }
    this.counters.confirmed++;
    e.deadline = now + ttl * 1000;
    if (sentAt !== undefined) e.validUntil = Math.max(e.validUntil, sentAt + ttl * 1000);
  }

  private tick(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = monotonicMs();
    let next = Infinity;
    let minInterval = Infinity;
    const expired: Entry[] = [];
    const stream = this.stream;
    for (const e of this.leases.values()) {
      if (now >= e.deadline) {
        expired.push(e);
        continue;
      }
      minInterval = Math.min(minInterval, e.intervalMs);
      if (stream) {
        // The timer is set for the earliest due; whoever is due soon after goes along.
        if (now >= e.nextSendAt - e.coalesceMs) this.send(stream, e, now);
        next = Math.min(next, e.nextSendAt);
      }
      next = Math.min(next, e.deadline);
    }
    for (const e of expired) this.lose(e, new EtcdLeaseInvalidError(`${e.id}: no keepalive confirmed within the ${e.ttlMs / 1000}s TTL`));
    if (this.closeIfEmpty()) return;
    if (this.stream && this.outstanding > 0) {
      const stuckAt = this.progressAt + Math.max(MIN_STUCK_MS, minInterval);
      if (now >= stuckAt) this.giveUpStuck(now);
      else next = Math.min(next, stuckAt);
    }
    this.schedule(next);
  }

  private send(stream: KeepAliveStream, e: Entry, now: number): void {
    if (this.outstanding === 0) this.progressAt = now;
    this.outstanding++;
    if (e.pending.length < MAX_PENDING) e.pending.push(now);
    e.nextSendAt = now + e.intervalMs;
    this.counters.sent++;
    stream.write({ ID: e.id });
  }

  /**
   * Give up a stream nobody answers on. Half-closed before the cancel, so
   * etcd3 does not mark the member failed: that would reset every channel of
   * the client to it (a frozen member's watches and probes reconnecting at
   * the thaw) and steer nothing, as the next stream's member is picked at
   * random all the same.
   */
  private giveUpStuck(now: number): void {
    const stream = this.stream!;
    this.log.warn({ event: 'lease_keepalive.stream_stuck', waitedMs: Math.round(now - this.progressAt), outstanding: this.outstanding, leases: this.leases.size }, 'no keepalive answered on the LeaseKeepAlive stream; opening another');
    this.dropStream();
    this.counters.streamFailures++;
    endAndCancel(stream);
    this.scheduleReopen();
  }

  private streamFailed(err: Error, what: string): void {
    this.dropStream();
    if (err instanceof ClientClosedError) {
      this.clientClosed = err;
      for (const e of [...this.leases.values()]) this.lose(e, err);
      // Nothing is kept any more: no timer may hold the process open.
      this.closeStream();
      return;
    }
    if (this.leases.size === 0) return;
    this.counters.streamFailures++;
    if (err instanceof EtcdInvalidAuthTokenError || err instanceof GRPCUnauthenticatedError) {
      // etcd3's pool drops its cached token on such an answer to a unary call, not to a stream.
      (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool?.authenticator?.invalidateMetadata?.();
    }
    const delay = this.scheduleReopen();
    this.log.warn({ event: 'lease_keepalive.stream_failed', err: String(err), leases: this.leases.size, retryInMs: delay }, `LeaseKeepAlive stream ${what}; opening another`);
  }

  private scheduleReopen(): number {
    const delay = this.backoff.next();
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = undefined;
      this.ensureStream();
    }, delay);
    return delay;
  }

  /** Forget the current stream: answers in flight on it are lost with it. */
  private dropStream(): void {
    this.stream = undefined;
    this.streamGen++;
    this.outstanding = 0;
    for (const e of this.leases.values()) e.pending = [];
  }

  private lose(e: Entry, err: Error): void {
    if (this.leases.get(e.id) !== e) return;
    this.leases.delete(e.id);
    this.counters.lost++;
    this.log.debug({ event: 'lease_keepalive.lost', leaseId: e.id, err: String(err) }, 'lease lost');
    try {
      e.lost(err);
    } catch (cbErr) {
      this.log.error({ event: 'lease_keepalive.callback_failed', err: String(cbErr) }, 'a lost() callback threw');
    }
  }

  private closeIfEmpty(): boolean {
    if (this.leases.size > 0) return false;
    this.closeStream();
    return true;
  }

  /** No lease left: end the stream (it is not a failure) and stop the timers. */
  private closeStream(): void {
    const stream = this.stream;
    this.dropStream();
    if (stream) endAndCancel(stream);
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  /** Have tick() run at `at` (monotonic ms) or sooner. */
  private schedule(at: number): void {
    if (!Number.isFinite(at) || this.leases.size === 0) return;
    const now = monotonicMs();
    const when = Math.max(at, now + MIN_TIMER_MS);
    if (this.timer && this.timerAt <= when) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = when;
    this.timer = setTimeout(() => this.tick(), when - now);
  }
}

/** Half-close first so the cancel's error does not make etcd3 mark the member failed (it does only while the stream is writable). */
function endAndCancel(stream: KeepAliveStream): void {
  stream.on('error', () => undefined);
  stream.end();
  stream.cancel();
}
