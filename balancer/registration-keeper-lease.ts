import { EventEmitter } from 'node:events';
import type { Etcd3, IPutResponse, Lease } from 'etcd3';
import { EtcdLeaseInvalidError } from 'etcd3/lib/errors';
import type { KeptLease, LeaseKeepAlive } from '../core/lease-keepalive';
import { leaseKeepAliveFor } from '../core/lease-keepalive-stream';
import { monotonicMs } from '../core/etcd-client';

/**
 * How a registration keeps its lease alive:
 * - `stream` (the default): every lease of the etcd client on one
 *   LeaseKeepAlive stream (core/lease-keepalive-stream.ts), as Go's clientv3;
 * - `lease`: etcd3's own `Lease`, one LeaseKeepAlive stream per lease (what
 *   every registration did before; kept for comparison, bench/scale-keepalive.ts).
 */
export type RegistrationKeepAlive = 'stream' | 'lease';

/** Events of a KeeperLease: `lost` once, when the lease is gone or may be. */
export interface KeeperLeaseEvents {
  lost: [err: Error];
}

/**
 * The lease a LeaseKeeper grants and writes its keys under: the few things
 * it needs of etcd3's `Lease`, so either keepalive (see RegistrationKeepAlive)
 * serves it.
 * - The grant is sent on construction; `grant()` resolves with the id (or
 *   rejects; etcd3's Lease emits `lost` then too, which a keeper ignores
 *   while it is granting).
 * - `put` writes under the lease once granted; an answer "lease not found"
 *   emits `lost` as well as rejecting.
 * - `lost` at most once, when etcd says the lease is gone or no keepalive was
 *   confirmed in time; never after `release()` or `revoke()`.
 * - `release()` stops the keepalives; `revoke()` releases, waits for the
 *   grant and revokes it (a lease etcd no longer knows is not an error).
 */
export interface KeeperLease extends EventEmitter<KeeperLeaseEvents> {
  grant(): Promise<string>;
  put(key: string, value: string): Promise<IPutResponse>;
  release(): void;
  revoke(): Promise<void>;
}

/** A new lease of `ttlSeconds` on `client`, kept alive the `how` way. */
export function newKeeperLease(client: Etcd3, ttlSeconds: number, how: RegistrationKeepAlive = 'stream'): KeeperLease {
  return how === 'lease' ? new Etcd3KeeperLease(client, ttlSeconds) : new StreamKeeperLease(client, ttlSeconds, leaseKeepAliveFor(client));
}

/** A lease kept alive on the client's shared LeaseKeepAlive stream. */
class StreamKeeperLease extends EventEmitter<KeeperLeaseEvents> implements KeeperLease {
  private readonly id: Promise<string>;
  private kept: KeptLease | undefined;
  private done = false;

  constructor(
    private readonly client: Etcd3,
    ttlSeconds: number,
    keepAlive: LeaseKeepAlive,
  ) {
    super();
    const sentAt = monotonicMs();
    this.id = client.leaseClient.leaseGrant({ TTL: ttlSeconds }).then((res) => {
      const id = String(res.ID);
      if (!this.done) this.kept = keepAlive.keep(id, ttlSeconds, sentAt, (err) => this.emitLoss(err));
      return id;
    });
    // Whoever needs the id sees the failure; nobody needs to be listening.
    this.id.catch(() => undefined);
  }

  grant(): Promise<string> {
    return this.id;
  }

  async put(key: string, value: string): Promise<IPutResponse> {
    const id = await this.id;
    try {
      return await this.client.put(key).value(value).lease(id).exec();
    } catch (err) {
      if (err instanceof EtcdLeaseInvalidError) this.emitLoss(err);
      throw err;
    }
  }

  release(): void {
    this.done = true;
    this.kept?.release();
  }

  async revoke(): Promise<void> {
    this.release();
    let id: string;
    try {
      id = await this.id;
    } catch {
      return; // never granted
    }
    try {
      await this.client.leaseClient.leaseRevoke({ ID: id });
    } catch (err) {
      if (!(err instanceof EtcdLeaseInvalidError)) throw err;
    }
  }

  private emitLoss(err: Error): void {
    if (this.done) return;
    this.release();
    this.emit('lost', err);
  }
}

/** etcd3's own Lease (its own LeaseKeepAlive stream, `lost` after 2 x TTL without an answer). */
class Etcd3KeeperLease extends EventEmitter<KeeperLeaseEvents> implements KeeperLease {
  private readonly lease: Lease;

  constructor(client: Etcd3, ttlSeconds: number) {
    super();
    this.lease = client.lease(ttlSeconds);
    this.lease.on('lost', (err: Error) => this.emit('lost', err));
  }

  grant(): Promise<string> {
    return this.lease.grant();
  }

  put(key: string, value: string): Promise<IPutResponse> {
    return this.lease.put(key).value(value).exec();
  }

  release(): void {
    this.lease.release();
  }

  revoke(): Promise<void> {
    return this.lease.revoke();
  }
}
