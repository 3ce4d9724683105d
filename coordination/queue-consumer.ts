import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Etcd3, IKeyValue, IRangeResponse, Watcher } from 'etcd3';
import type { Logger } from '../core/logger';
import type { Session } from './lock-session';
import { cancelWatcher } from './lock-wait';
import { ClaimLostError, deliver, type Delivery } from './queue-delivery';
import type { QueueKeys } from './queue-keys';
import { Waker } from './queue-waker';

/*
 * The consumer side of the queue (see queue.ts for the layout and the
 * protocol): claim the oldest unclaimed item with one txn, adopt a claim of
 * ours whose txn answer was lost, wait for items with a watch opened before
 * each look.
 */

export interface PopOptions {
  /** Give up waiting after this long (ms); pop() then resolves undefined. Default: wait forever. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** How often a waiting consumer looks again even without a watch event. */
const RECHECK_MS = 5_000;
/** Safety bound on consecutive lost races within one pop (each loss is someone else's progress). */
const MAX_RACES = 100_000;

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
    private readonly queue: QueueKeys,
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
    this.inFlight.add(claimKey);
    return deliver(this.client, this.queue, item, claimKey, claimRevision, this.log, () => this.inFlight.delete(claimKey));
  }
}
