import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, Lease } from 'etcd3';
import { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, EtcdUserNotFoundError, isRecoverableError } from 'etcd3';
import { ResumableWatch } from '../core/resumable-watch';
import { encodeEndpoint, endpointKey } from './endpoint-codec';
import type { Registration, RegistrationEvents, RegistrationOptions, RegistrationState } from './registration';
import { StateCell } from '../core/state-cell';
import { meshObserver } from '../core/mesh-observer';
import { componentLogger, type Logger } from '../core/logger';
import { Backoff } from '../core/backoff';
import { BrokenCircuitError } from 'cockatiel';

/** A lost lease is granted again after a random delay in [0, this) ms. */
const REGRANT_JITTER_MS = 500;

/** The probe loop of each etcd client, while one runs. */
const probes = new WeakMap<Etcd3, Promise<void>>();

/**
 * Resolves once etcd answers one cheap request (Maintenance/Status) from a
 * member that knows a leader (a refusal counts too). Every registration on
 * the client that lost its lease waits on the same probe, so an etcd that is
 * stopped or unreachable sees about one request per client per second
 * instead of a grant per registration, and no pile of grants is in flight
 * when it comes back (each would wait out its deadline, and etcd3 resets a
 * member's channels on a timeout).
 *
 * - A new attempt starts on a jittered backoff (100 ms doubling to 1 s)
 *   whether or not the last one has answered: an attempt that hangs on a
 *   member that is still coming back must not hold the whole client back,
 *   so the client learns that etcd answers within about a second of it.
 * - No explicit deadline: etcd3 retries a failed call on the next member
 *   with the caller's deadline, and an expired one fails there at once,
 *   resetting that member's channels and counting against its circuit
 *   breaker; the client's default deadline is fresh for each try.
 * - A member resumed with the rest of a frozen cluster answers Status before
 *   the cluster has re-elected a leader (a grant sent then fails "no
 *   leader"), and etcd3's open circuit breaker answers BrokenCircuitError
 *   (not "recoverable" to etcd3): both mean "not yet".
 *
 * Ends with the client: a closed client throws at once.
 */
export function whenEtcdAnswers(client: Etcd3): Promise<void> {
  let p = probes.get(client);
  if (!p) {
    p = new Promise<void>((resolve) => {
      const backoff = new Backoff(100, 1_000);
      let timer: NodeJS.Timeout | undefined;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve();
      };
      const attempt = () => {
        if (done) return;
        client.maintenance.status().then(
          (status) => {
            if (status.leader && status.leader !== '0') finish();
          },
          (err: unknown) => {
            if (!isRecoverableError(err as Error) && !(err instanceof BrokenCircuitError)) finish();
          },
        );
        timer = setTimeout(attempt, backoff.next());
      };
      attempt();
    }).finally(() => probes.delete(client));
    probes.set(client, p);
  }
  return p;
}

/**
 * Registration on an etcd lease (see registration.ts for the contract).
 *
 * Workarounds named here because etcd3 leaves them to the caller:
 * - etcd3's Lease emits `lost` and never re-grants; we grant a fresh lease
 *   and write the key again once etcd answers a probe shared by every
 *   registration on the client (whenEtcdAnswers), after a random delay under
 *   500 ms (full jitter, so a fleet that lost etcd together does not grant
 *   in one burst), retrying with a full-jitter backoff capped at 500 ms.
 * - A key deleted by hand while its lease lives is invisible to keepalives;
 *   we watch our own key and write it again under the same lease.
 * - etcd3's Lease judges "lost after 2×TTL without a keepalive" on the wall
 *   clock; a client from createEtcdClient has that check on monotonic time
 *   (patchEtcd3LeaseClock in etcd-client.ts), so a clock step neither keeps a
 *   dead registration believed alive nor drops a live one. Nothing here reads
 *   the wall clock for lease validity.
 */
export class LeaseRegistration extends EventEmitter<RegistrationEvents> implements Registration {
  readonly key: string;
  private registeredBefore = false;
  private readonly value: string;
  private readonly cell: StateCell<RegistrationState>;
  private readonly log: Logger;
  private lease: Lease | undefined;
  /** The lease of a grant() in flight, until it is registered or abandoned. */
  private pendingLease: Lease | undefined;
  private ownKeyWatch: ResumableWatch | undefined;
  private readonly backoff = new Backoff(50, 500);
  private retryTimer: NodeJS.Timeout | undefined;
  private firstRegistered: Promise<void> | undefined;
  /** Set once the key was first written; before that, a refusal by etcd fails start(). */
  private registeredOnce = false;
  /** Why etcd refused the first registration (permission, credentials): start() rejects with it. */
  private refusal: Error | undefined;
  private closing: Promise<void> | undefined;
  /** Bumped on every new grant attempt so stale callbacks of older leases do nothing. */
  private generation = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly opts: RegistrationOptions,
    log?: Logger,
  ) {
    super();
    this.key = endpointKey(opts.prefix, opts.service, opts.addr);
    this.value = encodeEndpoint(opts.addr, opts.metadata ?? null);
    this.log = log ?? componentLogger('registration', { key: this.key });
    this.cell = new StateCell<RegistrationState>('IDLE', this.log, 'registration');
    this.cell.on('change', (next: RegistrationState, prev: RegistrationState) => {
      // A REGISTERED after the first one is a re-registration (a lost lease granted anew).
      const regrant = next === 'REGISTERED' && this.registeredBefore;
      if (next === 'REGISTERED') this.registeredBefore = true;
      meshObserver()?.leaseState?.(this.key, next, regrant);
      this.emit('state', next, prev);
    });
  }

  get state(): RegistrationState {
    return this.cell.value;
  }

  get leaseId(): string | undefined {
    return this.currentLeaseId;
  }
  private currentLeaseId: string | undefined;

  start(): Promise<void> {
    if (!this.firstRegistered) {
      this.firstRegistered = new Promise<void>((resolve, reject) => {
        const onState = (next: RegistrationState) => {
          if (next === 'REGISTERED') {
            this.off('state', onState);
            resolve();
          } else if (next === 'CLOSED') {
            this.off('state', onState);
            reject(this.refusal ?? new Error(`registration of ${this.key} closed before it completed`));
          }
        };
        this.on('state', onState);
      });
      void this.grant('start');
    }
    return this.firstRegistered;
  }

  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    // A grant still in flight is revoked too: its put may yet land, and the
    // key must not outlive us by a TTL. etcd3's revoke waits for the grant.
    const lease = this.lease ?? this.pendingLease;
    this.lease = undefined;
    this.pendingLease = undefined;
    this.generation++;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.ownKeyWatch?.close();
    this.ownKeyWatch = undefined;
    this.cell.set('CLOSED', 'close() called', { leaseId: this.currentLeaseId });
    // Revoke first: it is what removes the key, and what clients are waiting for.
    if (lease) {
      const t0 = process.hrtime.bigint();
      try {
        await lease.revoke();
        this.log.info({ event: 'registration.revoked', leaseId: this.currentLeaseId, ms: Number(process.hrtime.bigint() - t0) / 1e6 }, 'lease revoked; key deleted');
      } catch (err) {
        this.log.warn({ event: 'registration.revoke_failed', err: String(err) }, 'revoke failed; the key will expire with its lease');
      }
    }
    this.removeAllListeners('state');
  }

  /** One attempt at a fresh lease + key; on failure, schedules the next. */
  private async grant(reason: string): Promise<void> {
    if (this.cell.is('CLOSED')) return;
    const gen = ++this.generation;
    this.cell.set('GRANTING', reason);
    const lease = this.client.lease(this.opts.ttlSeconds);
    this.pendingLease = lease;
    lease.on('lost', (err) => this.onLeaseLost(gen, err));
    try {
      const put = await lease.put(this.key).value(this.value).exec();
      const id = await lease.grant();
      if (gen !== this.generation) {
        // close() (or a newer attempt) overtook us: this lease must not linger.
        await lease.revoke().catch(() => undefined);
        return;
      }
      this.pendingLease = undefined;
      this.lease = lease;
      this.currentLeaseId = id;
      this.backoff.reset();
      this.registeredOnce = true;
      this.watchOwnKey(BigInt(put.header.revision) + 1n);
      this.cell.set('REGISTERED', 'key written under a live lease', { leaseId: this.currentLeaseId, ttl: this.opts.ttlSeconds });
    } catch (err) {
      // Revoke rather than release: if the put did land and only its answer
      // was lost, the orphan lease would otherwise hold a key for a full TTL.
      void lease.revoke().catch(() => undefined);
      if (this.pendingLease === lease) this.pendingLease = undefined;
      if (gen !== this.generation) return;
      // etcd answered and said no (the role may not write the key, wrong
      // password): retrying cannot help a first registration, so start()
      // fails with etcd's reason instead of retrying forever. Once registered,
      // the same refusal (a role revoked later) is retried like any failure.
      if (!this.registeredOnce && (err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError || err instanceof EtcdUserNotFoundError)) {
        this.refusal = err;
        this.log.warn({ event: 'registration.refused', err: String(err) }, 'etcd refused the registration; giving up');
        void this.close();
        return;
      }
      const delay = this.backoff.next();
      this.log.warn({ event: 'registration.grant_failed', err: String(err), retryInMs: delay }, 'could not register; retrying');
      this.retryTimer = setTimeout(() => void whenEtcdAnswers(this.client).then(() => gen === this.generation && void this.grant('retry after failure')), delay);
    }
  }

  private onLeaseLost(gen: number, err: unknown): void {
    if (gen !== this.generation || this.cell.is('CLOSED', 'GRANTING')) return;
    this.lease = undefined;
    // The key goes with the lease; watching it until the next grant would only
    // have etcd3 re-attach the watch on every reconnect while etcd is away and
    // deliver the expiry's delete to nobody who can act on it.
    this.ownKeyWatch?.close();
    this.ownKeyWatch = undefined;
    this.cell.set('LOST', `lease lost: ${String(err)}`, { leaseId: this.currentLeaseId });
    this.currentLeaseId = undefined;
    // A fleet loses its leases together (an etcd outage longer than the TTL):
    // a random delay spreads their grants over half a second instead of
    // sending them in one burst when etcd answers again (full jitter); and
    // nothing is asked of etcd before it answers the client's probe.
    void whenEtcdAnswers(this.client).then(() => {
      if (gen !== this.generation || !this.cell.is('LOST')) return;
      const delay = Math.random() * REGRANT_JITTER_MS;
      this.retryTimer = setTimeout(() => void this.grant('lease lost'), delay);
    });
  }

  /**
   * Our key deleted while we hold a live lease (by hand, or by a lease expiry
   * we have not heard of yet): write it again under the current lease. If the
   * lease is in fact gone, etcd3 turns the put's failure into `lost`, and we
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
      else if (this.currentLeaseId !== undefined && last.kv.lease !== this.currentLeaseId) void this.restoreKey(`our key was overwritten under lease ${last.kv.lease}`);
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
    this.log.warn({ event: 'registration.key_deleted', leaseId: this.currentLeaseId, reason }, `${reason}; writing it again`);
    return lease
      .put(this.key)
      .value(this.value)
      .exec()
      .then((res) => {
        if (gen !== this.generation) return undefined;
        this.log.info({ event: 'registration.key_restored', leaseId: this.currentLeaseId }, 'key written again');
        return BigInt(res.header.revision);
      })
      .catch((err) => {
        // An invalid lease already emitted `lost`; anything else: start over.
        if (gen === this.generation && this.cell.is('REGISTERED')) {
          this.lease = undefined;
          lease.release();
          this.cell.set('LOST', `re-put after delete failed: ${String(err)}`);
          void this.grant('re-put failed');
        }
        return undefined;
      });
  }
}
