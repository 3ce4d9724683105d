import type { Etcd3 } from 'etcd3';
import { encodeEndpoint, endpointKey } from './endpoint-codec';
import { LeaseKeeper } from './registration-lease-keeper';
import type { KeeperLease, RegistrationKeepAlive } from './registration-keeper-lease';
import { componentLogger, type Logger } from '../core/logger';

/** One backend of a group: the same fields as a single registration, minus the TTL. */
export interface GroupMember {
  addr: string;
  metadata?: unknown;
}

/** What a group registers: every member under `<prefix>/<service>/`, one lease of `ttlSeconds`. */
export interface RegistrationGroupOptions {
  prefix: string;
  service: string;
  ttlSeconds: number;
  members: GroupMember[];
  /** Delay before re-granting a lost lease is drawn from [0, this] ms (full jitter); default 500. */
  regrantJitterMs?: number;
  /** How the lease is kept alive (default `stream`: the etcd client's one LeaseKeepAlive stream). */
  keepAlive?: RegistrationKeepAlive;
}

/** etcd's default --max-txn-ops: a transaction may carry at most this many puts. */
const MAX_TXN_OPS = 128;

/**
 * Many backends of one process under ONE lease, as etcd's Go
 * `endpoints.Manager` allows (`AddEndpoint(..., clientv3.WithLease(id))`):
 * one keepalive per TTL/3 for the whole group instead of one per key (the
 * keepalive stream is the etcd client's, shared either way), and one grant to redo after an outage instead of
 * N. The keys live and die together: that is the trade.
 *
 * Contract (the same states as a Registration, for the group as a whole):
 * - `start()` resolves once every key is written under a live lease (puts
 *   batched 128 per transaction, etcd's default limit).
 * - A lost lease (etcd unreachable longer than the TTL, revoked by hand) is
 *   granted again once etcd answers a probe (whenEtcdAnswers), after a
 *   full-jitter delay in [0, regrantJitterMs], and every key written again;
 *   failures retry with jittered exponential backoff (capped at 500 ms).
 * - `close()` revokes the lease (every key goes at once); idempotent, no
 *   event after it resolves.
 *
 * Unlike LeaseRegistration it does not watch its keys: a key deleted or
 * overwritten by hand while the lease lives stays so until the next lease
 * loss. Use one LeaseRegistration per key where that matters.
 */
export class LeaseRegistrationGroup extends LeaseKeeper {
  readonly keys: string[];
  private readonly values: string[];

  constructor(client: Etcd3, opts: RegistrationGroupOptions, log?: Logger) {
    const keys = opts.members.map((m) => endpointKey(opts.prefix, opts.service, m.addr));
    super(client, log ?? componentLogger('registration-group', { service: `${opts.prefix}/${opts.service}`, keys: keys.length }), {
      ttlSeconds: opts.ttlSeconds,
      regrantJitterMs: opts.regrantJitterMs ?? 500,
      events: 'registration_group',
      holds: `${keys.length} keys`,
      closedEarly: 'registration group closed before it completed',
      keepAlive: opts.keepAlive,
    });
    this.keys = keys;
    this.values = opts.members.map((m) => encodeEndpoint(m.addr, m.metadata ?? null));
  }

  protected override async writeKeys(lease: KeeperLease, isCurrent: () => boolean): Promise<bigint> {
    const id = await lease.grant();
    let revision = 0n;
    for (let i = 0; i < this.keys.length && isCurrent(); i += MAX_TXN_OPS) {
      const ops = [];
      for (let j = i; j < Math.min(this.keys.length, i + MAX_TXN_OPS); j++) ops.push(this.client.put(this.keys[j]).value(this.values[j]).lease(id));
      // An always-true comparison (a key that never exists): an unconditional transaction.
      const res = await this.client.if(`${this.keys[0]}\u0000never`, 'Version', '==', 0).then(...ops).commit();
      revision = BigInt(res.header.revision);
    }
    return revision;
  }
}
