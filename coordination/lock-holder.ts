import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import { StateCell } from '../core/state-cell';
import { Session } from './lock-session';
import type { Ticket } from './lock-ticket';
import { validateCoordinationName } from './lock-name';

/** What a lock and an election are both configured with. */
export interface TicketHolderOptions {
  /** Keys live under `NAME/` exactly as for `etcdctl lock|elect NAME`. */
  name: string;
  /** TTL (s) of the lease opened when no `session` is given (default 60, Go's default). */
  ttlSeconds?: number;
  /** A session to take the ticket under; never closed by the holder. */
  session?: Session;
  log?: Logger;
}

/**
 * The part Go's `concurrency.Mutex` and `concurrency.Election` share, and so
 * do ours (lock.ts, election.ts): a name checked once, keys under `NAME/`,
 * one state cell, a Ticket (our key) under a session that is either given
 * or opened here, and one way to give both up.
 */
/** Events every TicketHolder emits, besides its own (`E`). */
export type TicketHolderEvents<S extends string, E> = E & { state: [next: S, previous: S] };

export abstract class TicketHolder<S extends string, E extends Record<keyof E, unknown[]>> extends EventEmitter<TicketHolderEvents<S, E>> {
  readonly name: string;
  protected readonly prefix: string;
  protected readonly log: Logger;
  protected readonly cell: StateCell<S>;
  protected ticket: Ticket | undefined;
  private ownSession: Session | undefined;

  constructor(
    protected readonly client: Etcd3,
    protected readonly opts: TicketHolderOptions,
    /** `lock` or `election`: names the log component, state events and errors. */
    private readonly kind: string,
    initial: S,
  ) {
    super();
    const bad = validateCoordinationName(opts.name);
    if (bad) throw new Error(`invalid ${kind} name ${JSON.stringify(opts.name)}: ${bad}`);
    this.name = opts.name;
    this.prefix = `${opts.name}/`;
    this.log = opts.log ?? componentLogger(kind, { [kind]: opts.name });
    this.cell = new StateCell<S>(initial, this.log, kind);
    // Typed as the base's own event; TypeScript cannot see it through `E &`.
    this.cell.on('change', (next: S, prev: S) => (this as unknown as EventEmitter<{ state: [S, S] }>).emit('state', next, prev));
  }

  get state(): S {
    return this.cell.value;
  }

  /** Our key, once written. */
  get key(): string | undefined {
    return this.ticket?.key;
  }

  /** Create revision of our key (decimal string; compare as BigInt): the fencing token / term. */
  get revision(): string | undefined {
    return this.ticket?.revision.toString();
  }

  /** The session our key lives under, once a key is written. */
  get currentSession(): Session | undefined {
    return this.ticket?.session;
  }

  /** The given session, or one opened (and later closed) by us. */
  protected async session(): Promise<Session> {
    return this.opts.session ?? (this.ownSession = await Session.open(this.client, this.opts.ttlSeconds ?? 60, this.log));
  }

  /**
   * Delete our key, and revoke the session if we opened it (one RPC does
   * both). Never throws: if etcd is unreachable the key goes with its lease.
   */
  protected async cleanup(): Promise<void> {
    const ticket = this.ticket;
    const session = this.ownSession;
    this.ownSession = undefined;
    try {
      if (session) {
        await ticket?.close();
        await session.close();
      } else if (ticket) {
        await ticket.discard();
      }
    } catch (err) {
      this.log.warn({ event: `${this.kind}.release_failed`, err: String(err) }, `could not delete our ${this.kind} key; it goes when its lease expires`);
    }
  }
}
