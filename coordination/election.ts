import type { Etcd3 } from 'etcd3';
import type { Logger } from '../core/logger';
import { Ticket, TicketLostError } from './lock-ticket';
import { TicketHolder, type TicketHolderOptions } from './lock-holder';
import { ElectionObserver, type LeaderInfo } from './election-observer';

/**
 * Leader election on etcd with the layout of Go's `concurrency.Election`, so
 * it interoperates with `etcdctl elect NAME PROPOSAL` and `etcdctl elect -l
 * NAME` both ways:
 *
 * - candidate key `NAME/<lease id hex>` holding the proposal, under a session
 *   lease, created by a txn guarded by `create_revision == 0`;
 * - the leader is the candidate with the lowest create revision;
 * - a candidate waits for the deletion of the candidate just ahead of it
 *   (Go's waitDeletes), so leadership passes in campaign order.
 *
 * Leadership ends by resign() (our key is deleted, the next candidate leads)
 * or by loss: the session's lease expired or may have (no keepalive answer
 * within the TTL — declared before etcd can expire it, so two leaders never
 * both believe they lead), was revoked, or our key was deleted by hand. Loss
 * moves the state to LOST and emits `lost` once; the work must stop at once.
 * A new campaign() after a loss runs on a new session (lease).
 */
export type ElectionState = 'IDLE' | 'CAMPAIGNING' | 'LEADER' | 'LOST' | 'RESIGNED';

/** Election name (keys under `NAME/` as for `etcdctl elect NAME`), TTL, optional session (never closed; one campaign only, as in Go). */
export type ElectionOptions = TicketHolderOptions;

/** Our campaign key or its lease went away. */
export class LeadershipLostError extends Error {
  override name = 'LeadershipLostError';
}

export class Election extends TicketHolder<ElectionState, { elected: [value: string]; lost: [err: LeadershipLostError] }> {
  constructor(client: Etcd3, opts: ElectionOptions) {
    super(client, opts, 'election', 'IDLE');
  }

  /**
   * Become a candidate with `value` and resolve once we lead. Rejects with
   * LeadershipLostError if our key or lease goes while waiting, or with
   * `signal.reason` on abort (our key is then deleted).
   */
  async campaign(value: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    if (!this.cell.is('IDLE', 'LOST', 'RESIGNED')) throw new Error(`election ${this.name}: campaign() while ${this.state}`);
    this.ticket = undefined;
    this.cell.set('CAMPAIGNING', 'campaign() called', { value });
    let ticket: Ticket | undefined;
    try {
      opts.signal?.throwIfAborted();
      ticket = await Ticket.take(this.client, this.prefix, await this.session(), value, this.log);
      this.ticket = ticket;
      // resign() during the awaits above: give the fresh key up again.
      if (this.cell.is('RESIGNED')) throw new Error(`election ${this.name}: resigned while campaigning`);
      this.log.info({ event: 'election.candidate', key: ticket.key, revision: ticket.revision.toString() }, `candidate ${ticket.key}`);
      if (!ticket.headAtTakeIsUs) {
        await ticket.waitTurn(opts.signal, (ahead) =>
          this.log.debug({ event: 'election.wait', ahead: ahead.key.toString(), aheadRevision: ahead.create_revision }, 'waiting for the candidate ahead to go'),
        );
      }
    } catch (err) {
      await this.cleanup();
      const lost = err instanceof TicketLostError;
      this.cell.set(lost ? 'LOST' : 'RESIGNED', `campaign failed: ${err instanceof Error ? err.message : String(err)}`);
      throw lost ? new LeadershipLostError(`election ${this.name}: ${err.message}`) : err;
    }
    const mine = ticket;
    mine.once('lost', (reason: string) => this.onLost(mine, reason));
    this.cell.set('LEADER', 'ours is the lowest create revision', { key: mine.key, revision: mine.revision.toString(), value });
    this.emit('elected', value);
    if (mine.lost) this.onLost(mine, 'lost while campaigning');
  }

  /** Change the value of our candidate key (seen by observers if we lead). */
  async proclaim(value: string): Promise<void> {
    if (!this.ticket || !this.cell.is('CAMPAIGNING', 'LEADER')) throw new Error(`election ${this.name}: proclaim() while ${this.state}`);
    try {
      await this.ticket.setValue(value);
    } catch (err) {
      if (err instanceof TicketLostError) throw new LeadershipLostError(`election ${this.name}: ${err.message}`);
      throw err;
    }
  }

  /** Give up leadership (or candidacy): our key is deleted, our own lease revoked. Idempotent; never throws. */
  async resign(): Promise<void> {
    if (this.cell.is('LEADER', 'CAMPAIGNING')) this.cell.set('RESIGNED', 'resign() called');
    await this.cleanup();
  }

  /** The current leader, or undefined if there is no candidate. */
  async leader(): Promise<LeaderInfo | undefined> {
    const res = await this.client.getAll().prefix(this.prefix).sort('Create', 'Ascend').limit(1).exec();
    const kv = res.kvs[0];
    return kv && { key: kv.key.toString(), value: kv.value.toString(), createRevision: kv.create_revision };
  }

  /** Follow the leader of this election (call start() on the result). */
  observe(log?: Logger): ElectionObserver {
    return new ElectionObserver(this.client, this.name, log ?? this.log);
  }

  private onLost(ticket: Ticket, reason: string): void {
    if (ticket !== this.ticket || !this.cell.is('LEADER')) return;
    this.cell.set('LOST', reason, { key: ticket.key, revision: ticket.revision.toString() });
    void this.cleanup();
    this.emit('lost', new LeadershipLostError(`election ${this.name}: leadership lost: ${reason}`));
  }
}

export { ElectionObserver, type LeaderInfo };
