import type { Etcd3, IEvent } from 'etcd3';
import { ResumableWatch } from '../core/resumable-watch';
import { encodeEndpoint, endpointKey } from './endpoint-codec';
import type { Registration, RegistrationOptions, RegistrationState } from './registration';
import { LeaseKeeper } from './registration-lease-keeper';
import type { KeeperLease } from './registration-keeper-lease';
import { meshObserver } from '../core/mesh-observer';
import { componentLogger, type Logger } from '../core/logger';

export { whenEtcdAnswers } from './registration-lease-keeper';

/**
 * Registration of one key on its own etcd lease (see registration.ts for the
 * contract; LeaseKeeper grants, re-grants after a loss and revokes).
 *
 * A key deleted by hand while its lease lives is invisible to keepalives, so
 * we watch our own key and write it again under the same lease.
 */
export class LeaseRegistration extends LeaseKeeper implements Registration {
  readonly key: string;
  private registeredBefore = false;
  private readonly value: string;
  private ownKeyWatch: ResumableWatch | undefined;

  constructor(client: Etcd3, opts: RegistrationOptions, log?: Logger) {
    const key = endpointKey(opts.prefix, opts.service, opts.addr);
    super(client, log ?? componentLogger('registration', { key }), {
      ttlSeconds: opts.ttlSeconds,
      regrantJitterMs: 500,
      events: 'registration',
      holds: 'key',
      closedEarly: `registration of ${key} closed before it completed`,
      keepAlive: opts.keepAlive,
    });
    this.key = key;
    this.value = encodeEndpoint(opts.addr, opts.metadata ?? null);
  }

  protected override stateChanged(next: RegistrationState): void {
    // A REGISTERED after the first one is a re-registration (a lost lease granted anew).
    const regrant = next === 'REGISTERED' && this.registeredBefore;
    if (next === 'REGISTERED') this.registeredBefore = true;
    meshObserver()?.leaseState?.(this.key, next, regrant);
  }

  protected override async writeKeys(lease: KeeperLease): Promise<bigint> {
    const put = await lease.put(this.key, this.value);
    return BigInt(put.header.revision);
  }

  protected override onRegistered(revision: bigint): void {
    this.watchOwnKey(revision + 1n);
  }

  protected override onLeaseGone(): void {
    // The key goes with the lease; watching it until the next grant would only
    // have etcd3 re-attach the watch on every reconnect while etcd is away and
    // deliver the expiry's delete to nobody who can act on it.
    this.ownKeyWatch?.close();
    this.ownKeyWatch = undefined;
  }

  /**
   * Our key deleted while we hold a live lease (by hand, or by a lease expiry
   * we have not heard of yet): write it again under the current lease. If the
   * lease is in fact gone, the put's failure (lease not found) is `lost`, and we
   * grant anew. The watch starts right after our own write and resumes from
   * its last event across stream drops, so no deletion goes unseen; if etcd
   * compacted past it while we were cut off, we simply write the key again.
   */
  private watchOwnKey(fromRevision: bigint): void {
    this.ownKeyWatch?.close();
    const watch = new ResumableWatch(this.client, { start: Buffer.from(this.key), end: Buffer.alloc(0) }, fromRevision, this.log);
    this.ownKeyWatch = watch;
    watch.on('batch', (events: IEvent[]) => {
      const last = events[events.length - 1];
      // etcd3 types say 'Delete', the wire (proto enum names) says 'DELETE'.
      if (String(last.type).toUpperCase() === 'DELETE') void this.restoreKey('our key was deleted while the lease lives');
      // Overwritten without our lease (`etcdctl put KEY ...`): the key would
      // no longer go with us on revoke or expiry, a ghost backend for good.
      else if (this.leaseId !== undefined && last.kv.lease !== this.leaseId) void this.restoreKey(`our key was overwritten under lease ${last.kv.lease}`);
    });
    watch.on('error', (err: Error) => {
      if (this.cell.is('CLOSED')) return;
      void this.restoreKey(`own-key watch cannot resume (${err.message})`).then((rev) => {
        if (rev !== undefined) this.watchOwnKey(rev + 1n);
      });
    });
    watch.start();
  }

  /** Write our key again under the current lease; resolves with the write's revision. */
  private restoreKey(reason: string): Promise<bigint | undefined> {
    const lease = this.lease;
    if (!lease || !this.cell.is('REGISTERED')) return Promise.resolve(undefined);
    const gen = this.generation;
    this.log.warn({ event: 'registration.key_deleted', leaseId: this.leaseId, reason }, `${reason}; writing it again`);
    return lease
      .put(this.key, this.value)
      .then((res) => {
        if (gen !== this.generation) return undefined;
        this.log.info({ event: 'registration.key_restored', leaseId: this.leaseId }, 'key written again');
        return BigInt(res.header.revision);
      })
      .catch((err) => {
        // An invalid lease already emitted `lost`; anything else: start over.
        if (gen === this.generation && this.cell.is('REGISTERED')) this.leaseFailed(lease, `re-put after delete failed: ${String(err)}`, 're-put failed');
        return undefined;
      });
  }
}
