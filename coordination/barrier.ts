import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import { Session } from './lock-session';
import { validateCoordinationName } from './lock-name';
import { eventOfType, sleep, waitDelete, watchKey } from './lock-wait';

/**
 * A double barrier on etcd, after Go's `recipes.DoubleBarrier` (same layout):
 * `count` participants `enter()` and all return once the last one has
 * entered; later they `leave()` and all return once the last one has left.
 *
 * Layout (NAME used verbatim as a prefix):
 *   NAME/waiters/<unique>  one per participant, under its session lease, so a
 *                          participant that dies stops counting;
 *   NAME/ready             put by whoever sees `count` waiters; the others
 *                          return on that PUT (watched from the revision of
 *                          their own key, so one put before they started
 *                          watching is not missed, and a stale `ready` from an
 *                          earlier round never releases anyone).
 *
 * Guarantees: enter() returns only after `count` participants have entered
 * (their keys all existed at once); leave() returns only after every
 * participant's key is gone. More than `count` live participants:
 * TooManyParticipantsError (our key is withdrawn). On timeout or abort our
 * key is withdrawn, so a participant that gave up no longer counts.
 */
export interface BarrierOptions {
  name: string;
  /** Participants needed, at least 1. */
  count: number;
  /** TTL (s) of the session opened when none is given (default 60). */
  ttlSeconds?: number;
  /** A session to enter under; the barrier never closes a session it did not open. */
  session?: Session;
  log?: Logger;
}

export interface BarrierWaitOptions {
  /** Give up after this long (ms): BarrierTimeoutError, our key withdrawn. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class TooManyParticipantsError extends Error {
  override name = 'TooManyParticipantsError';
}

export class BarrierTimeoutError extends Error {
  override name = 'BarrierTimeoutError';
  constructor(
    message: string,
    /** Participants present when we gave up. */
    readonly present: number,
  ) {
    super(message);
  }
}

export class DoubleBarrier {
  readonly name: string;
  readonly count: number;
  private readonly waitersPrefix: string;
  private readonly readyKey: string;
  private readonly log: Logger;
  private session: Session | undefined;
  private ownSession = false;
  private myKey: string | undefined;
  private myRevision: string | undefined;

  constructor(
    private readonly client: Etcd3,
    private readonly opts: BarrierOptions,
  ) {
    const bad = validateCoordinationName(opts.name);
    if (bad) throw new Error(`invalid barrier name ${JSON.stringify(opts.name)}: ${bad}`);
    if (!Number.isInteger(opts.count) || opts.count < 1) throw new Error(`barrier count must be an integer >= 1, got ${opts.count}`);
    this.name = opts.name;
    this.count = opts.count;
    this.waitersPrefix = `${opts.name}/waiters/`;
    this.readyKey = `${opts.name}/ready`;
    this.log = opts.log ?? componentLogger('barrier', { barrier: opts.name, count: opts.count });
  }

  /** Our participant key, once entered. */
  get key(): string | undefined {
    return this.myKey;
  }

  /** Live participants right now. */
  async participants(): Promise<number> {
    return this.client.getAll().prefix(this.waitersPrefix).count();
  }

  /** Enter and wait until `count` participants have entered. */
  async enter(opts: BarrierWaitOptions = {}): Promise<void> {
    if (this.myKey) throw new Error(`barrier ${this.name}: already entered`);
    const { signal, cleanup } = withTimeout(opts);
    try {
      if (!this.session) {
        this.session = this.opts.session ?? (await Session.open(this.client, this.opts.ttlSeconds ?? 60, this.log));
        this.ownSession = !this.opts.session;
      }
      const session = this.session;
      // Go's newUniqueEphemeralKey: a nanosecond-ish time stamp, created only if new.
      let rev: string | undefined;
      let key = '';
      for (let attempt = 0; rev === undefined; attempt++) {
        key = `${this.waitersPrefix}${Date.now()}${String(Math.floor(Math.random() * 1e6)).padStart(6, '0')}`;
        const res = await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value('').lease(session.leaseId)).else(this.client.get(key)).commit();
        if (res.succeeded) rev = res.header.revision;
        else if (res.responses[0].response_range!.kvs[0]?.lease === session.leaseId) rev = res.responses[0].response_range!.kvs[0].create_revision;
        else if (attempt > 10) throw new Error(`barrier ${this.name}: could not create a participant key`);
      }
      this.myKey = key;
      this.myRevision = rev;
      const present = await this.participants();
      this.log.info({ event: 'barrier.entered', key, present, count: this.count }, `entered barrier ${this.name} (${present}/${this.count})`);
      if (present > this.count) {
        await this.withdraw();
        throw new TooManyParticipantsError(`barrier ${this.name} already has ${present - 1} of ${this.count} participants`);
      }
      if (present === this.count) {
        await this.client.put(this.readyKey).value('');
        return;
      }
      await this.waitForEvent(this.readyKey, rev, 'put', signal);
    } catch (err) {
      const reported = await this.explain(err, opts, 'enter');
      await this.withdraw();
      throw reported;
    } finally {
      cleanup();
    }
  }

  /** Leave and wait until every participant has left (Go's Leave algorithm). */
  async leave(opts: BarrierWaitOptions = {}): Promise<void> {
    if (!this.myKey) throw new Error(`barrier ${this.name}: leave() before enter()`);
    const { signal, cleanup } = withTimeout(opts);
    try {
      for (;;) {
        signal.throwIfAborted();
        const res = await this.client.getAll().prefix(this.waitersPrefix).exec();
        if (res.kvs.length === 0) break;
        let lowest = res.kvs[0];
        let highest = res.kvs[0];
        for (const kv of res.kvs) {
          if (BigInt(kv.mod_revision) < BigInt(lowest.mod_revision)) lowest = kv;
          if (BigInt(kv.mod_revision) > BigInt(highest.mod_revision)) highest = kv;
        }
        const mine = res.kvs.find((kv) => kv.key.toString() === this.myKey);
        if (res.kvs.length === 1 && mine) {
          // Last one out: clear `ready` for the next round, then go.
          await this.client.delete().key(this.readyKey);
          await this.client.delete().key(this.myKey);
          break;
        }
        if (mine && lowest.key.toString() === this.myKey) {
          // The lowest stays until everyone else is gone: wait on the highest.
          await waitDelete(this.client, highest.key.toString(), res.header.revision, signal);
          continue;
        }
        // Delete ourselves (if not already) and wait for the lowest to go.
        if (mine) await this.client.delete().key(this.myKey);
        await waitDelete(this.client, lowest.key.toString(), res.header.revision, signal);
      }
      this.myKey = undefined;
      await this.close();
    } catch (err) {
      throw await this.explain(err, opts, 'leave');
    } finally {
      cleanup();
    }
  }

  /** Withdraw (delete our key) and end our own session. Idempotent; never throws. */
  async close(): Promise<void> {
    await this.withdraw();
    const s = this.session;
    this.session = undefined;
    if (s && this.ownSession) await s.close();
  }

  private async withdraw(): Promise<void> {
    const key = this.myKey;
    const rev = this.myRevision;
    this.myKey = undefined;
    if (!key || !rev) return;
    try {
      await this.client.if(key, 'Create', '==', rev).then(this.client.delete().key(key)).commit();
    } catch (err) {
      this.log.warn({ event: 'barrier.withdraw_failed', err: String(err) }, 'could not delete our participant key; it goes with its lease');
    }
  }

  private async waitForEvent(key: string, fromRevision: string, type: 'put', signal: AbortSignal): Promise<void> {
    for (let from = fromRevision; ; ) {
      signal.throwIfAborted();
      // ResumableWatch: a dropped stream resumes from the last event seen, so the put is not missed.
      const w = watchKey(this.client, key, from, this.log);
      let onAbort: (() => void) | undefined;
      const outcome = await new Promise<'event' | 'cancelled' | 'aborted'>((resolve) => {
        w.on('batch', (events: IEvent[]) => eventOfType(events, type) && resolve('event'));
        w.once('error', () => resolve('cancelled'));
        onAbort = () => resolve('aborted');
        signal.addEventListener('abort', onAbort, { once: true });
        w.start();
      });
      signal.removeEventListener('abort', onAbort!);
      w.close();
      if (outcome === 'event') return;
      if (outcome === 'aborted') throw signal.reason;
      // History compacted under us: the key's mod revision tells whether the
      // put we wait for happened after our start revision.
      await sleep(100, signal);
      const now = await this.client.get(key).exec();
      const kv = now.kvs[0];
      if (kv && BigInt(kv.mod_revision) >= BigInt(fromRevision)) return;
      from = (BigInt(now.header.revision) + 1n).toString();
    }
  }

  private async explain(err: unknown, opts: BarrierWaitOptions, what: string): Promise<unknown> {
    if (err instanceof TimeoutMarker) {
      const present = await this.participants().catch(() => -1);
      return new BarrierTimeoutError(`barrier ${this.name}: ${what} timed out after ${opts.timeoutMs} ms with ${present < 0 ? '?' : present} of ${this.count} participants`, present);
    }
    return err;
  }
}

class TimeoutMarker extends Error {}

/** One signal for "caller aborted or timeoutMs passed"; the timeout aborts with a TimeoutMarker. */
function withTimeout(opts: BarrierWaitOptions): { signal: AbortSignal; cleanup: () => void } {
  const ac = new AbortController();
  const onAbort = () => ac.abort(opts.signal!.reason);
  if (opts.signal?.aborted) ac.abort(opts.signal.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const t = opts.timeoutMs === undefined ? undefined : setTimeout(() => ac.abort(new TimeoutMarker('timeout')), opts.timeoutMs);
  return {
    signal: ac.signal,
    cleanup: () => {
      if (t) clearTimeout(t);
      opts.signal?.removeEventListener('abort', onAbort);
    },
  };
}
