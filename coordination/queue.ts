import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Etcd3, IKeyValue, IRangeResponse, Watcher } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import type { Session } from './lock-session';
import { validateCoordinationName } from './lock-name';
import { cancelWatcher, sleep } from './lock-wait';

/**
 * A distributed FIFO work queue on etcd: every item goes to exactly one live
 * consumer, and nothing is lost when a consumer dies (at-least-once).
 *
 * Layout (NAME used verbatim as a prefix):
 *   NAME/items/<id>    the item; value = payload; no lease, so it outlives
 *                      everyone until acknowledged. <id> is a 15-digit
 *                      millisecond time and random hex (unique, readable);
 *                      the order is the key's create revision.
 *   NAME/claims/<id>   "taken by a consumer"; value = who; written under the
 *                      consumer's session lease.
 *
 * An item is available iff no claim key exists for it. Why the item stays
 * put while claimed: if pop moved the value into a leased key, the lease's
 * expiry would delete the only copy. With this layout a dead consumer's
 * claims vanish with its lease and its items are simply available again, at
 * the head of the queue (their create revision is old).
 *
 * - push  = txn(create_revision(items/id) == 0) put items/id.
 * - pop   = read the claims and the oldest items; pick the oldest item with no
 *           claim; txn(create_revision(claims/id) == 0 AND
 *           mod_revision(items/id) == the one we read) put claims/id with our
 *           lease; else (someone raced us) the txn returns fresh listings and
 *           we try the next candidate. However many consumers race, the txn
 *           lets exactly one claim win.
 * - ack   = txn(create_revision(claims/id) == our claim's) delete items/id and
 *           claims/id. If our claim is gone (lease expired) but nobody has
 *           claimed the item since, it is deleted all the same (a late ack:
 *           no duplicate); if someone else holds it now, ack fails with
 *           ClaimLostError (the item is being delivered again).
 * - nack  = delete our claim: the item is available again at once, and at the
 *           head of the queue (its create revision is the oldest unclaimed).
 * - wait  = a watch on NAME/ (new items, and claims deleted by nack or lease
 *           expiry) opened before the first look, so no wake-up is missed;
 *           plus a slow re-check in case a watch stalls.
 *
 * A claim whose txn succeeded but whose answer was lost (a retried RPC then
 * fails the compare) is recognised by its value (a per-consumer id) and
 * adopted, so it is not stuck for the life of the consumer.
 */
export interface QueueItem {
  /** `<id>` of `NAME/items/<id>`. */
  id: string;
  key: string;
  /** The item as UTF-8 text (invalid bytes shown as U+FFFD); `bytes` is exact. */
  value: string;
  /** The item exactly as stored. */
  bytes: Buffer;
  /** Create revision of the item key: its place in the queue. */
  createRevision: string;
}

export interface Delivery extends QueueItem {
  claimKey: string;
  /** Create revision of our claim key. */
  claimRevision: string;
  /** Done with it: delete the item and our claim. ClaimLostError if our claim expired and someone else claimed the item since. */
  ack(): Promise<void>;
  /** Give it back: delete our claim, the item is available again at once. */
  nack(): Promise<void>;
}

export interface QueueOptions {
  name: string;
  log?: Logger;
}

export interface PopOptions {
  /** Give up waiting after this long (ms); pop() then resolves undefined. Default: wait forever. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Our claim on an item was gone before we acknowledged it; the item is (or was) delivered again. */
export class ClaimLostError extends Error {
  override name = 'ClaimLostError';
}

/** How often a waiting consumer looks again even without a watch event. */
const RECHECK_MS = 5_000;
/** Safety bound on consecutive lost races within one pop (each loss is someone else's progress). */
const MAX_RACES = 100_000;

export class EtcdQueue {
  readonly name: string;
  readonly itemsPrefix: string;
  readonly claimsPrefix: string;
  private readonly log: Logger;

  constructor(
    private readonly client: Etcd3,
    opts: QueueOptions,
  ) {
    const bad = validateCoordinationName(opts.name);
    if (bad) throw new Error(`invalid queue name ${JSON.stringify(opts.name)}: ${bad}`);
    this.name = opts.name;
    this.itemsPrefix = `${opts.name}/items/`;
    this.claimsPrefix = `${opts.name}/claims/`;
    this.log = opts.log ?? componentLogger('queue', { queue: opts.name });
  }

  /** Append an item (bytes kept exactly; a string is stored as UTF-8); resolves once etcd has it. */
  async push(item: string | Buffer): Promise<QueueItem> {
    const bytes = typeof item === 'string' ? Buffer.from(item, 'utf8') : item;
    const value = bytes.toString('utf8');
    for (let attempt = 0; ; attempt++) {
      const id = `${String(Date.now()).padStart(15, '0')}-${randomBytes(6).toString('hex')}`;
      const key = this.itemsPrefix + id;
      const res = await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(bytes)).else(this.client.get(key)).commit();
      if (res.succeeded) {
        this.log.debug({ event: 'queue.pushed', key, revision: res.header.revision }, 'item pushed');
        return { id, key, value, bytes, createRevision: res.header.revision };
      }
      // Either a retried RPC whose first try landed (our own value is there),
      // or a 48-bit random collision in the same millisecond: try a new id.
      const kv = res.responses[0].response_range!.kvs[0];
      if (kv && kv.value.equals(bytes) && BigInt(kv.version) === 1n) return { id, key, value, bytes, createRevision: kv.create_revision };
      if (attempt >= 10) throw new Error(`queue ${this.name}: could not find a free item key`);
    }
  }

  /** A consumer that claims items under `session`'s lease. */
  consumer(session: Session): QueueConsumer {
    return new QueueConsumer(this.client, this, session, this.log);
  }

  /** Items in the queue, and how many of them are claimed (in flight). */
  async size(): Promise<{ items: number; claimed: number }> {
    const [items, claims] = await Promise.all([this.client.getAll().prefix(this.itemsPrefix).count(), this.client.getAll().prefix(this.claimsPrefix).count()]);
    return { items, claimed: claims };
  }
}

interface Listing {
  claims: IKeyValue[];
  items: IKeyValue[];
  more: boolean;
}

export class QueueConsumer {
  private readonly who: string;
  /** Claim keys we handed out and have not acked/nacked. */
  private readonly inFlight = new Set<string>();
  private busy = false;

  constructor(
    private readonly client: Etcd3,
    private readonly queue: EtcdQueue,
    readonly session: Session,
    private readonly log: Logger,
  ) {
    this.who = JSON.stringify({ host: hostname(), pid: process.pid, lease: session.leaseHex, consumer: randomBytes(6).toString('hex') });
  }

  /**
   * Claim the oldest available item, or resolve undefined if none is
   * available right now. One pop at a time per consumer (use more consumers
   * for parallelism; they may share a session).
   */
  async tryPop(): Promise<Delivery | undefined> {
    if (this.busy) throw new Error(`queue ${this.queue.name}: overlapping pops on one consumer`);
    this.busy = true;
    try {
      return await this.claimNext();
    } finally {
      this.busy = false;
    }
  }

  private async claimNext(): Promise<Delivery | undefined> {
    let limit = 16;
    let listing = await this.list(limit);
    for (let race = 0; race < MAX_RACES; race++) {
      if (!this.session.alive) throw new ClaimLostError(`queue ${this.queue.name}: consumer session lost`);
      const claimed = new Set(listing.claims.map((kv) => kv.key.toString().slice(this.queue.claimsPrefix.length)));
      const orphan = listing.claims.find((kv) => kv.value.toString() === this.who && !this.inFlight.has(kv.key.toString()));
      if (orphan) {
        const adopted = await this.adopt(orphan);
        if (adopted) return adopted;
      }
      const pick = listing.items.find((kv) => !claimed.has(kv.key.toString().slice(this.queue.itemsPrefix.length)));
      if (!pick) {
        if (!listing.more) return undefined;
        // Every item we saw is in flight and there are more: look further.
        limit *= 2;
        listing = await this.list(limit);
        continue;
      }
      const itemKey = pick.key.toString();
      const id = itemKey.slice(this.queue.itemsPrefix.length);
      const claimKey = this.queue.claimsPrefix + id;
      const res = await this.client
        .if(claimKey, 'Create', '==', 0)
        .and(itemKey, 'Mod', '==', pick.mod_revision)
        .then(this.client.put(claimKey).value(this.who).lease(this.session.leaseId))
        .else(...this.listOps(limit))
        .commit();
      if (res.succeeded) return this.delivery(pick, claimKey, res.header.revision);
      listing = this.parse(res.responses[0].response_range!, res.responses[1].response_range!);
    }
    throw new Error(`queue ${this.queue.name}: lost ${MAX_RACES} claim races in a row`);
  }

  /**
   * Claim the oldest available item, waiting for one if the queue is empty.
   * Resolves undefined after `timeoutMs`; rejects with `signal.reason` on abort.
   */
  async pop(opts: PopOptions = {}): Promise<Delivery | undefined> {
    // Monotonic: a wall-clock step must not end (or stretch) the wait.
    const deadline = opts.timeoutMs === undefined ? Infinity : performance.now() + opts.timeoutMs;
    const waker = new Waker();
    // A lost session ends the wait at once (tryPop then says so), rather than
    // at the next item or re-check: the owner opens a new session sooner.
    const onLost = () => waker.wake();
    let watcher: Watcher | undefined;
    const arm = async () => {
      const w = await this.client.watch().prefix(`${this.queue.name}/`).create();
      watcher = w;
      w.on('data', () => waker.wake());
      w.once('error', (err: Error) => {
        this.log.warn({ event: 'queue.watch_cancelled', err: String(err) }, 'queue watch cancelled by etcd; watching again');
        void cancelWatcher(w);
        waker.wake();
        if (watcher === w) watcher = undefined;
      });
    };
    // The common case, an item ready, needs no watch.
    opts.signal?.throwIfAborted();
    const first = await this.tryPop();
    if (first) return first;
    this.session.once('lost', onLost);
    try {
      for (;;) {
        opts.signal?.throwIfAborted();
        // The watch exists before each look, so an item pushed after the
        // look wakes us; a look that raced with an event just looks again.
        if (!watcher) await arm();
        const seen = waker.count;
        const d = await this.tryPop();
        if (d) return d;
        const left = deadline - performance.now();
        if (left <= 0) return undefined;
        await waker.wait(seen, Math.min(left, RECHECK_MS), opts.signal);
      }
    } finally {
      this.session.off('lost', onLost);
      const w = watcher as Watcher | undefined;
      if (w) await cancelWatcher(w);
    }
  }

  private listOps(limit: number) {
    return [
      this.client.getAll().prefix(this.queue.claimsPrefix),
      this.client.getAll().prefix(this.queue.itemsPrefix).sort('Create', 'Ascend').limit(limit),
    ] as const;
  }

  private async list(limit: number): Promise<Listing> {
    const [claims, items] = await Promise.all(this.listOps(limit).map((b) => b.exec()));
    return this.parse(claims, items);
  }

  private parse(claims: IRangeResponse, items: IRangeResponse): Listing {
    return { claims: claims.kvs, items: items.kvs, more: items.more };
  }

  /** A claim under our lease that we never handed out: a claim txn whose answer was lost. */
  private async adopt(claim: IKeyValue): Promise<Delivery | undefined> {
    const claimKey = claim.key.toString();
    const id = claimKey.slice(this.queue.claimsPrefix.length);
    const item = (await this.client.get(this.queue.itemsPrefix + id).exec()).kvs[0];
    if (!item) {
      await this.client.if(claimKey, 'Create', '==', claim.create_revision).then(this.client.delete().key(claimKey)).commit();
      return undefined;
    }
    this.log.info({ event: 'queue.claim_adopted', claimKey }, 'found a claim of ours we never delivered (lost txn answer); delivering it');
    return this.delivery(item, claimKey, claim.create_revision);
  }

  private delivery(item: IKeyValue, claimKey: string, claimRevision: string): Delivery {
    const key = item.key.toString();
    this.inFlight.add(claimKey);
    const settle = async (ack: boolean) => {
      const ops = ack ? [this.client.delete().key(key), this.client.delete().key(claimKey)] : [this.client.delete().key(claimKey)];
      const res = await this.client
        .if(claimKey, 'Create', '==', claimRevision)
        .then(...ops)
        .else(this.client.get(key), this.client.get(claimKey))
        .commit();
      this.inFlight.delete(claimKey);
      if (res.succeeded) return;
      // Our claim is gone. An item also gone was acked: by us (a retried RPC
      // whose first try landed) or by whoever got it after our lease expired.
      const now = res.responses[0].response_range!.kvs[0];
      if (!now || !ack) return;
      // Late ack: our lease expired, but if nobody has claimed the item since,
      // the work is done and deleting it now avoids a second delivery.
      if (res.responses[1].response_range!.kvs.length === 0) {
        const late = await this.client.if(claimKey, 'Create', '==', 0).and(key, 'Mod', '==', now.mod_revision).then(this.client.delete().key(key)).commit();
        if (late.succeeded) {
          this.log.warn({ event: 'queue.acked_late', key, claimKey }, 'our claim had expired but nobody took the item since: acknowledged it late');
          return;
        }
      }
      throw new ClaimLostError(`queue ${this.queue.name}: claim ${claimKey} expired before the ack and the item was claimed again; it is delivered again`);
    };
    return {
      id: key.slice(this.queue.itemsPrefix.length),
      key,
      value: item.value.toString(),
      bytes: Buffer.from(item.value),
      createRevision: item.create_revision,
      claimKey,
      claimRevision,
      ack: () => settle(true),
      nack: () => settle(false),
    };
  }
}

/** Counts wake-ups; wait(seen) returns once the count passed `seen`, or after `ms`. */
class Waker {
  count = 0;
  private waiters: (() => void)[] = [];

  wake(): void {
    this.count++;
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  async wait(seen: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.count !== seen) return;
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const waiter = () => ac.abort('woken');
    this.waiters.push(waiter);
    try {
      await sleep(ms, ac.signal);
    } catch {
      if (signal?.aborted) throw signal.reason;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.waiters = this.waiters.filter((w) => w !== waiter);
    }
  }
}
