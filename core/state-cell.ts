import { EventEmitter } from 'node:events';
import type { Logger } from './logger';

/**
 * State in one place: a value that changes only through `set`, which logs
 * `OLD -> NEW` with the reason and notifies listeners. Modelled on grpc-js
 * round_robin's `updateState` and etcd3's `LeaseState`: when something goes
 * wrong, the log alone tells the story of every transition.
 */
/** Events of a StateCell: `change(next, old, reason)` on every transition. */
export interface StateCellEvents<S extends string> {
  change: [next: S, old: S, reason: string];
}

export class StateCell<S extends string> extends EventEmitter<StateCellEvents<S>> {
  private current: S;

  constructor(
    initial: S,
    private readonly log: Logger,
    private readonly what: string,
  ) {
    super();
    this.current = initial;
  }

  get value(): S {
    return this.current;
  }

  /** Move to `next` (no-op if already there); emits `change(next, old, reason)`. */
  set(next: S, reason: string, fields: Record<string, unknown> = {}): void {
    const old = this.current;
    if (old === next) return;
    this.current = next;
    this.log.info({ event: `${this.what}.state`, from: old, to: next, reason, ...fields }, `${this.what} ${old} -> ${next}: ${reason}`);
    this.emit('change', next, old, reason);
  }

  is(...states: S[]): boolean {
    return states.includes(this.current);
  }
}
