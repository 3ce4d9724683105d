import type { Etcd3, IKeyValue } from 'etcd3';
import type { Logger } from '../core/logger';
import type { QueueKeys } from './queue-keys';

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

/** Our claim on an item was gone before we acknowledged it; the item is (or was) delivered again. */
export class ClaimLostError extends Error {
  override name = 'ClaimLostError';
}

/**
 * An item we claimed (claim key `claimKey`, created at `claimRevision`),
 * with its ack and nack. Both compare our claim's create revision, so they
 * never delete a claim someone else made after ours expired. `settled` is
 * called once etcd answered either.
 */
export function deliver(client: Etcd3, keys: QueueKeys, item: IKeyValue, claimKey: string, claimRevision: string, log: Logger, settled: () => void): Delivery {
  const key = item.key.toString();
  const settle = async (ack: boolean) => {
    const ops = ack ? [client.delete().key(key), client.delete().key(claimKey)] : [client.delete().key(claimKey)];
    const res = await client.if(claimKey, 'Create', '==', claimRevision).then(...ops).else(client.get(key), client.get(claimKey)).commit();
    settled();
    if (res.succeeded) return;
    // Our claim is gone. An item also gone was acked: by us (a retried RPC
    // whose first try landed) or by whoever got it after our lease expired.
    const now = res.responses[0].response_range!.kvs[0];
    if (!now || !ack) return;
    // Late ack: our lease expired, but if nobody has claimed the item since,
    // the work is done and deleting it now avoids a second delivery.
    if (res.responses[1].response_range!.kvs.length === 0) {
      const late = await client.if(claimKey, 'Create', '==', 0).and(key, 'Mod', '==', now.mod_revision).then(client.delete().key(key)).commit();
      if (late.succeeded) {
        log.warn({ event: 'queue.acked_late', key, claimKey }, 'our claim had expired but nobody took the item since: acknowledged it late');
        return;
      }
    }
    throw new ClaimLostError(`queue ${keys.name}: claim ${claimKey} expired before the ack and the item was claimed again; it is delivered again`);
  };
  return {
    id: key.slice(keys.itemsPrefix.length),
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
