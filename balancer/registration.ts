import type { EventEmitter } from 'node:events';

/**
 * A backend's presence in the registry: one key, `<prefix>/<service>/<addr>`,
 * bound to a TTL lease that is kept alive for as long as the registration is
 * open. The interface is small on purpose; `registration-lease.ts` holds the
 * implementation.
 *
 * Contract:
 * - `start()` resolves once the key is written under a live lease.
 * - The key stays registered without help from the caller: if the lease is
 *   lost (etcd unreachable for longer than the TTL, lease revoked, key
 *   deleted by hand), a new lease is granted and the key written again as soon
 *   as etcd answers. Each transition is logged `OLD -> NEW` and emitted.
 * - `close()` revokes the lease (etcd deletes the key at once), is idempotent,
 *   and no event fires after it resolves.
 */
/** Events of a Registration: `state(next, previous)` on each transition. */
export interface RegistrationEvents {
  state: [next: RegistrationState, previous: RegistrationState];
}

export interface Registration extends EventEmitter<RegistrationEvents> {
  /** The etcd key this backend is registered under. */
  readonly key: string;
  /** Current state; see RegistrationState. */
  readonly state: RegistrationState;
  /** The lease currently holding the key (decimal string), if any. */
  readonly leaseId: string | undefined;
  /** Register; resolves when the key is first written under a live lease. */
  start(): Promise<void>;
  /** Revoke the lease (the key disappears) and stop for good. Idempotent. */
  close(): Promise<void>;
}

/**
 * IDLE: not started. GRANTING: asking etcd for a lease and writing the key.
 * REGISTERED: key written, lease kept alive. LOST: lease or key gone, about to
 * grant again. CLOSED: revoked by close(); final.
 */
export type RegistrationState = 'IDLE' | 'GRANTING' | 'REGISTERED' | 'LOST' | 'CLOSED';

/** What to register. */
export interface RegistrationOptions {
  /** Naming prefix, default `services`. */
  prefix: string;
  /** Service name, e.g. `greeter`. */
  service: string;
  /** The `host:port` clients dial. */
  addr: string;
  /** Lease TTL in seconds (etcd's minimum is 1 s... in practice use >= 2). */
  ttlSeconds: number;
  /** Any JSON; stored as the record's Metadata. */
  metadata?: unknown;
  /**
   * How the lease is kept alive: `stream` (default), every lease of the etcd
   * client on one LeaseKeepAlive stream, as Go's clientv3; `lease`, etcd3's
   * own Lease with a stream each (the former behaviour, for comparison).
   */
  keepAlive?: 'stream' | 'lease';
}
