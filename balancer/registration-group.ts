import { EventEmitter } from 'node:events';
import type { Etcd3, Lease } from 'etcd3';
import { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, EtcdUserNotFoundError } from 'etcd3';
import { encodeEndpoint, endpointKey } from './endpoint-codec';
import type { RegistrationEvents, RegistrationState } from './registration';
import { StateCell } from '../core/state-cell';
import { componentLogger, type Logger } from '../core/logger';
import { Backoff } from '../core/backoff';
import { whenEtcdAnswers } from './registration-lease';

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
}

/** etcd's default --max-txn-ops: a transaction may carry at most this many puts. */
const MAX_TXN_OPS = 128;

/**
 * Many backends of one process under ONE lease, as etcd's Go
 * `endpoints.Manager` allows (`AddEndpoint(..., clientv3.WithLease(id))`):
 * one keepalive stream and one keepalive per TTL/3 for the whole group
 * instead of one per key, and one grant to redo after an outage instead of
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
export class LeaseRegistrationGroup extends EventEmitter<RegistrationEvents> {
  readonly keys: string[];
  private readonly values: string[];
  private readonly cell: StateCell<RegistrationState>;
  private readonly log: Logger;
  private lease: Lease | undefined;
  private pendingLease: Lease | undefined;
  private readonly backoff = new Backoff(50, 500);
  private retryTimer: NodeJS.Timeout | undefined;
  private firstRegistered: Promise<void> | undefined;
  private registeredOnce = false;
  private refusal: Error | undefined;
  private closing: Promise<void> | undefined;
  private generation = 0;
  private currentLeaseId: string | undefined;

  constructor(
    private readonly client: Etcd3,
    private readonly opts: RegistrationGroupOptions,
    log?: Logger,
  ) {
    super();
    this.keys = opts.members.map((m) => endpointKey(opts.prefix, opts.service, m.addr));
    this.values = opts.members.map((m) => encodeEndpoint(m.addr, m.metadata ?? null));
    this.log = log ?? componentLogger('registration-group', { service: `${opts.prefix}/${opts.service}`, keys: this.keys.length });
    this.cell = new StateCell<RegistrationState>('IDLE', this.log, 'registration_group');
    this.cell.on('change', (next: RegistrationState, prev: RegistrationState) => this.emit('state', next, prev));
  }

  get state(): RegistrationState {
    return this.cell.value;
  }

  /** The lease holding every key (decimal string), if any. */
  get leaseId(): string | undefined {
    return this.currentLeaseId;
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
            reject(this.refusal ?? new Error('registration group closed before it completed'));
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
    const lease = this.lease ?? this.pendingLease;
    this.lease = undefined;
    this.pendingLease = undefined;
    this.generation++;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.cell.set('CLOSED', 'close() called', { leaseId: this.currentLeaseId });
    if (lease) {
      try {
        await lease.revoke();
        this.log.info({ event: 'registration_group.revoked', leaseId: this.currentLeaseId }, `lease revoked; ${this.keys.length} keys deleted`);
      } catch (err) {
        this.log.warn({ event: 'registration_group.revoke_failed', err: String(err) }, 'revoke failed; the keys will expire with the lease');
      }
    }
    this.removeAllListeners('state');
  }

  private async grant(reason: string): Promise<void> {
    if (this.cell.is('CLOSED')) return;
    const gen = ++this.generation;
    this.cell.set('GRANTING', reason);
    const lease = this.client.lease(this.opts.ttlSeconds);
    this.pendingLease = lease;
    lease.on('lost', (err) => this.onLeaseLost(gen, err));
    try {
      const id = await lease.grant();
      for (let i = 0; i < this.keys.length; i += MAX_TXN_OPS) {
        const ops = [];
        for (let j = i; j < Math.min(this.keys.length, i + MAX_TXN_OPS); j++) ops.push(this.client.put(this.keys[j]).value(this.values[j]).lease(id));
        // An always-true comparison (a key that never exists): an unconditional transaction.
        await this.client.if(`${this.keys[0]}\u0000never`, 'Version', '==', 0).then(...ops).commit();
        if (gen !== this.generation) break;
      }
      if (gen !== this.generation) {
        await lease.revoke().catch(() => undefined);
        return;
      }
      this.pendingLease = undefined;
      this.lease = lease;
      this.currentLeaseId = id;
      this.backoff.reset();
      this.registeredOnce = true;
      this.cell.set('REGISTERED', `${this.keys.length} keys written under one live lease`, { leaseId: id, ttl: this.opts.ttlSeconds });
    } catch (err) {
      void lease.revoke().catch(() => undefined);
      if (this.pendingLease === lease) this.pendingLease = undefined;
      if (gen !== this.generation) return;
      if (!this.registeredOnce && (err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError || err instanceof EtcdUserNotFoundError)) {
        this.refusal = err;
        this.log.warn({ event: 'registration_group.refused', err: String(err) }, 'etcd refused the registration; giving up');
        void this.close();
        return;
      }
      const delay = this.backoff.next();
      this.log.warn({ event: 'registration_group.grant_failed', err: String(err), retryInMs: delay }, 'could not register; retrying');
      this.retryTimer = setTimeout(() => void whenEtcdAnswers(this.client).then(() => gen === this.generation && void this.grant('retry after failure')), delay);
    }
  }

  private onLeaseLost(gen: number, err: unknown): void {
    if (gen !== this.generation || this.cell.is('CLOSED', 'GRANTING')) return;
    this.lease = undefined;
    this.cell.set('LOST', `lease lost: ${String(err)}`, { leaseId: this.currentLeaseId });
    this.currentLeaseId = undefined;
    // Every process of a fleet loses its lease at about the same moment after
    // an outage; a random delay keeps their grants from arriving together.
    // Nothing is asked of etcd before it answers the client's probe.
    void whenEtcdAnswers(this.client).then(() => {
      if (gen !== this.generation || !this.cell.is('LOST')) return;
      const delay = Math.random() * (this.opts.regrantJitterMs ?? 500);
      this.retryTimer = setTimeout(() => void this.grant('lease lost'), delay);
    });
  }
}
