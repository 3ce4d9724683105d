import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import type { Session } from './lock-session';
import type { QueueItem } from './queue-delivery';
import { QueueConsumer } from './queue-consumer';
import { queueKeys, type QueueKeys } from './queue-keys';

// The queue's public face stays here (index.ts and the CLI import from this file).
export { ClaimLostError, type Delivery, type QueueItem } from './queue-delivery';
export { QueueConsumer, type PopOptions } from './queue-consumer';

export interface QueueOptions {
  name: string;
  log?: Logger;
}

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
export class EtcdQueue implements QueueKeys {
  readonly name: string;
  readonly itemsPrefix: string;
  readonly claimsPrefix: string;
  private readonly log: Logger;

  constructor(
    private readonly client: Etcd3,
    opts: QueueOptions,
  ) {
    const keys = queueKeys(opts.name);
    this.name = keys.name;
    this.itemsPrefix = keys.itemsPrefix;
    this.claimsPrefix = keys.claimsPrefix;
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
