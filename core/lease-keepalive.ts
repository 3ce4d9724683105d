/**
 * Keeping etcd leases alive, many at once: the interface of
 * `lease-keepalive-stream.ts`, which multiplexes every lease of one etcd3
 * client over ONE LeaseKeepAlive stream, as Go's clientv3 lessor does
 * (etcd3's own `Lease` opens a stream per lease).
 *
 * Contract:
 * - `keep(id, ttl, grantSentAt, lost)` starts keeping lease `id` alive: a
 *   keepalive at once, then one every TTL/3 (Go's interval) while the lease
 *   is kept. The lease is etcd's until `validUntil` for sure: the send
 *   time of the last confirmed keepalive plus the TTL etcd answered (the
 *   grant's send time plus its TTL before the first answer).
 * - `lost(err)` is called at most once, and the lease is no longer kept,
 *   when etcd answered TTL 0 (expired, revoked), or no keepalive was
 *   confirmed within the TTL: the TTL etcd last answered has passed since
 *   that answer arrived (since keep() before the first answer), Go
 *   clientv3's deadline; or the client was closed. Between `validUntil` and
 *   that deadline the lease may be gone (etcd expires it a TTL after it
 *   processed the last keepalive, somewhere between send and answer): a
 *   holder that must never overlap another (a lock) stops at `validUntil`;
 *   a registration, which re-grants on `lost`, waits for the deadline.
 * - `release()` stops keeping it (etcd expires it within its TTL unless
 *   revoked); idempotent; no `lost` after it.
 * - Time is monotonic (`monotonicMs()`); the wall clock is never read.
 */
export interface LeaseKeepAlive {
  keep(id: string, ttlSeconds: number, grantSentAt: number, lost: (err: Error) => void): KeptLease;
  /** Counters since the keeper was created (for tests, benches, dashboards). */
  readonly stats: LeaseKeepAliveStats;
}

/** One lease kept alive by a LeaseKeepAlive. */
export interface KeptLease {
  /** The lease id (decimal string, as etcd3 gives it). */
  readonly id: string;
  /** Monotonic ms until which etcd holds the lease for sure (see the contract). */
  readonly validUntil: number;
  /** Stop keeping the lease; idempotent; no `lost` after it. */
  release(): void;
}

export interface LeaseKeepAliveStats {
  /** Leases kept now. */
  leases: number;
  /** Whether a stream is open now (opened and not failed or closed). */
  streamOpen: boolean;
  /** LeaseKeepAlive streams opened, in all. */
  streamsOpened: number;
  /** Streams that broke (an error or end from etcd), or were given up as stuck. */
  streamFailures: number;
  /** Keepalive requests written, and answers with a TTL (confirmed). */
  sent: number;
  confirmed: number;
  /** Leases reported lost. */
  lost: number;
}
