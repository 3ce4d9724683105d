import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, EtcdUserNotFoundError, isRecoverableError } from 'etcd3/lib/errors';
import { BrokenCircuitError } from 'cockatiel';
import type { RegistrationEvents, RegistrationState } from './registration';
import { StateCell } from '../core/state-cell';
import type { Logger } from '../core/logger';
import { Backoff } from '../core/backoff';
import { newKeeperLease, type KeeperLease, type RegistrationKeepAlive } from './registration-keeper-lease';

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
 *   (not "recoverable" to etcd3): both mean "not yet". The first answer
 *   without a leader resets the backoff (the next try 50-150 ms later, then
 *   doubling again): etcd is back, the election takes about one election
 *   timeout, and the 1 s the backoff grew to during the outage would be
 *   waited on top of it. Only the first: a cluster without quorum answers
 *   so for as long as it lasts.
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
      let answeredLeaderless = false;
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
            if (status.leader && status.leader !== '0') return finish();
            // A member answered, without a leader yet (an election after a
            // freeze takes about one election timeout): ask again soon rather
            // than at the 1 s the backoff grew to while etcd was silent.
            // Once per probe: a cluster that lost its quorum answers so for
            // as long as it lasts, and gets the 1 s cadence back.
            if (done || answeredLeaderless) return;
            answeredLeaderless = true;
            backoff.reset();
            clearTimeout(timer);
            timer = setTimeout(attempt, 50 + backoff.next());
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

/** How a keeper names itself in logs and errors. */
export interface LeaseKeeperOptions {
  ttlSeconds: number;
  /** A lost lease is granted again after a random delay in [0, this) ms (full jitter). */
  regrantJitterMs: number;
  /** Prefix of every log event: `registration`, `registration_group`. */
  events: string;
  /** What the lease holds, for log lines: `key`, `300 keys`. */
  holds: string;
  /** The error start() rejects with when closed before the first registration (and not refused). */
  closedEarly: string;
  /** How the lease is kept alive (default `stream`: one LeaseKeepAlive stream per etcd client). */
  keepAlive?: RegistrationKeepAlive;
}

/**
 * Keeps keys registered under one etcd lease; subclasses say which keys
 * (`writeKeys`) and may act when a lease is registered or gone.
 *
 * Contract (the states of registration.ts):
 * - `start()` resolves on the first REGISTERED; it rejects on CLOSED, with
 *   etcd's refusal if etcd refused the first registration (permission,
 *   credentials: retrying cannot help) and retries nothing then.
 * - A failed grant or write revokes its lease (if the write landed and only
 *   the answer was lost, the orphan would hold keys for a TTL) and retries
 *   on a full-jitter backoff capped at 500 ms, once etcd answers a probe.
 * - The lease (registration-keeper-lease.ts) is kept alive on the etcd
 *   client's one LeaseKeepAlive stream (core/lease-keepalive-stream.ts,
 *   shared by every registration, group and lease of that client): it is
 *   `lost` when etcd answers TTL 0 or no keepalive is confirmed within the
 *   TTL (a TTL after the last answer, Go clientv3's deadline; monotonic).
 *   A lost lease is never re-granted by itself: on LOST we wait for the
 *   probe shared by every registration on the client (whenEtcdAnswers), then
 *   a full-jitter delay (a fleet that lost etcd together does not grant in
 *   one burst), then grant a fresh lease and write every key again.
 * - With `keepAlive: 'lease'` it is etcd3's own Lease instead (a stream per
 *   lease, `lost` after 2xTTL without an answer, on monotonic time with a
 *   client from createEtcdClient: patchEtcd3LeaseClock in etcd-client.ts).
 *   Nothing here reads the wall clock for lease validity.
 * - `close()` revokes the live lease or the one still being granted (its
 *   writes may yet land); idempotent; no `state` event after it resolves.
 */
export abstract class LeaseKeeper extends EventEmitter<RegistrationEvents> {
  protected readonly cell: StateCell<RegistrationState>;
  /** The live lease while REGISTERED (and until a loss is noticed). */
  protected lease: KeeperLease | undefined;
  /** The lease of a grant() in flight, until it is registered or abandoned. */
  private pendingLease: KeeperLease | undefined;
  private currentLeaseId: string | undefined;
  private readonly backoff = new Backoff(50, 500);
  private retryTimer: NodeJS.Timeout | undefined;
  /** A `lost` heard while grant() was still writing under that lease (its attempt generation): the attempt fails on it. */
  private lostWhileGranting: { gen: number; err: unknown } | undefined;
  private firstRegistered: Promise<void> | undefined;
  /** Set once the keys were first written; before that, a refusal by etcd fails start(). */
  private registeredOnce = false;
  /** Why etcd refused the first registration: start() rejects with it. */
  private refusal: Error | undefined;
  private closing: Promise<void> | undefined;
  private gen = 0;

  constructor(
    protected readonly client: Etcd3,
    protected readonly log: Logger,
    private readonly keeper: LeaseKeeperOptions,
  ) {
    super();
    this.cell = new StateCell<RegistrationState>('IDLE', log, keeper.events);
    this.cell.on('change', (next: RegistrationState, prev: RegistrationState) => {
      this.stateChanged(next, prev);
      this.emit('state', next, prev);
    });
  }

  /**
   * Write every key under `lease` (granted or being granted); resolves with
   * the revision of the last write. Stop early once `isCurrent()` is false
   * (close() or a newer grant overtook this one: the lease gets revoked).
   */
  protected abstract writeKeys(lease: KeeperLease, isCurrent: () => boolean): Promise<bigint>;

  /** Keys written at `revision` under a fresh live lease, just before REGISTERED. */
  protected onRegistered(_revision: bigint): void {}

  /** The lease was lost or the keeper is closing, just before LOST / CLOSED. */
  protected onLeaseGone(): void {}

  /** Every state change, before the `state` event. */
  protected stateChanged(_next: RegistrationState, _prev: RegistrationState): void {}

  get state(): RegistrationState {
    return this.cell.value;
  }

  /** The lease holding the keys (decimal string), if any. */
  get leaseId(): string | undefined {
    return this.currentLeaseId;
  }

  /** Bumped on every grant attempt and on close: a callback of an older one does nothing. */
  protected get generation(): number {
    return this.gen;
  }

  start(): Promise<void> {
    if (!this.firstRegistered) {
      this.firstRegistered = new Promise<void>((resolve, reject) => {
        const onState = (next: RegistrationState) => {
          if (next === 'REGISTERED') {
            this.off('state', onState);
            resolve();
          } else if (next === 'CLOSED') {
            this.off('state', onState);
            reject(this.refusal ?? new Error(this.keeper.closedEarly));
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
    // keys must not outlive us by a TTL. etcd3's revoke waits for the grant.
    const lease = this.lease ?? this.pendingLease;
    this.lease = undefined;
    this.pendingLease = undefined;
    this.gen++;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.onLeaseGone();
    this.cell.set('CLOSED', 'close() called', { leaseId: this.currentLeaseId });
    // Revoke first: it is what removes the keys, and what clients are waiting for.
    if (lease) {
      const t0 = process.hrtime.bigint();
      try {
        await lease.revoke();
        this.log.info({ event: `${this.keeper.events}.revoked`, leaseId: this.currentLeaseId, ms: Number(process.hrtime.bigint() - t0) / 1e6 }, `lease revoked; ${this.keeper.holds} deleted`);
      } catch (err) {
        this.log.warn({ event: `${this.keeper.events}.revoke_failed`, err: String(err) }, `revoke failed; ${this.keeper.holds} will expire with the lease`);
      }
    }
    this.removeAllListeners('state');
  }

  /** One attempt at a fresh lease + keys; on failure, schedules the next. */
  protected async grant(reason: string): Promise<void> {
    if (this.cell.is('CLOSED')) return;
    const gen = ++this.gen;
    const isCurrent = () => gen === this.gen;
    this.cell.set('GRANTING', reason);
    const lease = newKeeperLease(this.client, this.keeper.ttlSeconds, this.keeper.keepAlive);
    this.pendingLease = lease;
    lease.on('lost', (err) => this.onLeaseLost(gen, err));
    try {
      const revision = await this.writeKeys(lease, isCurrent);
      const id = await lease.grant();
      if (!isCurrent()) {
        // close() (or a newer attempt) overtook us: this lease must not linger.
        await lease.revoke().catch(() => undefined);
        return;
      }
      // Lost while its keys were being written (etcd frozen past the TTL
      // mid-attempt): the keeper no longer keeps it, so REGISTERED on it
      // would last one TTL at most. Fail the attempt instead: revoked, retried.
      const lostMeanwhile = this.lostWhileGranting;
      this.lostWhileGranting = undefined;
      if (lostMeanwhile?.gen === gen) throw lostMeanwhile.err;
      this.pendingLease = undefined;
      this.lease = lease;
      this.currentLeaseId = id;
      this.backoff.reset();
      this.registeredOnce = true;
      this.onRegistered(revision);
      this.cell.set('REGISTERED', `${this.keeper.holds} written under a live lease`, { leaseId: id, ttl: this.keeper.ttlSeconds });
    } catch (err) {
      void lease.revoke().catch(() => undefined);
      if (this.pendingLease === lease) this.pendingLease = undefined;
      if (!isCurrent()) return;
      // Once registered, the same refusal (a role revoked later) is retried like any failure.
      if (!this.registeredOnce && (err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError || err instanceof EtcdUserNotFoundError)) {
        this.refusal = err;
        this.log.warn({ event: `${this.keeper.events}.refused`, err: String(err) }, 'etcd refused the registration; giving up');
        void this.close();
        return;
      }
      const delay = this.backoff.next();
      this.log.warn({ event: `${this.keeper.events}.grant_failed`, err: String(err), retryInMs: delay }, 'could not register; retrying');
      this.retryTimer = setTimeout(() => void whenEtcdAnswers(this.client).then(() => isCurrent() && void this.grant('retry after failure')), delay);
    }
  }

  /** The live lease failed a write of ours (not through `lost`): drop it and grant anew at once. */
  protected leaseFailed(lease: KeeperLease, reason: string, grantReason: string): void {
    this.lease = undefined;
    lease.release();
    this.cell.set('LOST', reason);
    void this.grant(grantReason);
  }

  private onLeaseLost(gen: number, err: unknown): void {
    if (gen === this.gen && this.cell.is('GRANTING')) {
      // grant() is still writing under it: it fails the attempt when its writes return.
      this.lostWhileGranting = { gen, err };
      return;
    }
    if (gen !== this.gen || this.cell.is('CLOSED', 'GRANTING')) return;
    this.lease = undefined;
    this.onLeaseGone();
    this.cell.set('LOST', `lease lost: ${String(err)}`, { leaseId: this.currentLeaseId });
    this.currentLeaseId = undefined;
    void whenEtcdAnswers(this.client).then(() => {
      if (gen !== this.gen || !this.cell.is('LOST')) return;
      const delay = Math.random() * this.keeper.regrantJitterMs;
      this.retryTimer = setTimeout(() => void this.grant('lease lost'), delay);
    });
  }
}
