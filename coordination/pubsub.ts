import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import { CompactedError } from '../core/etcd-errors';
import { ResumableWatch, prefixRange } from '../core/resumable-watch';

export { CompactedError };

/**
 * Publish/subscribe on etcd (the seed's "消息发布与订阅"): a topic is a key
 * prefix, `<topic>/`, and every message is its own key under it, created in
 * a transaction that never overwrites. A message's identity and order is
 * its etcd revision: subscribers see messages in revision order, and a
 * subscriber can replay from any revision etcd has not compacted.
 *
 * Key: `<topic>/<12 hex digits of ms since epoch>-<16 random hex digits>`,
 * so `etcdctl get --prefix <topic>/` lists messages roughly in time order;
 * the authoritative order is the revision, not the key.
 *
 * Topic and payload are bytes: a topic given as a Buffer is used as is (it
 * need not be UTF-8), a string as its UTF-8; payloads are stored and
 * delivered byte for byte.
 */

/** One message as a subscriber receives it. */
export interface Message {
  /** The topic for display (UTF-8; bytes that are not UTF-8 show as U+FFFD). */
  topic: string;
  /** The etcd key the message was stored under. */
  key: string;
  /** The payload, byte for byte. */
  value: Buffer;
  /** The revision that created it: its position in the topic's order. */
  revision: string;
}

/** What `publish` reports. */
export interface Published {
  key: string;
  /** The message's revision; `subscribe(..., { fromRevision })` with it replays from this message. */
  revision: string;
  /** Lease ID (decimal) when published with a TTL. */
  lease?: string;
}

export interface PublishOptions {
  /** Attach a lease of this many seconds (not kept alive): the message expires. */
  ttlSeconds?: number;
}

/** The key prefix of a topic (always ends in `/`, so topic `a` never matches `ab/...`). */
export function topicPrefix(topic: string): string {
  return topicPrefixBytes(topic).toString();
}

/** topicPrefix for a topic in bytes: trailing `/` dropped, then one `/`. */
export function topicPrefixBytes(topic: string | Buffer): Buffer {
  let t = Buffer.from(topic);
  let end = t.length;
  while (end > 0 && t[end - 1] === 0x2f) end--;
  t = t.subarray(0, end);
  if (t.length === 0) throw new RangeError('topic must not be empty');
  return Buffer.concat([t, Buffer.from('/')]);
}

function messageId(): string {
  return `${Date.now().toString(16).padStart(12, '0')}-${randomBytes(8).toString('hex')}`;
}

/**
 * Publish one message. Idempotent under retries: the key is chosen once and
 * written only if absent; if etcd3 retries a transaction whose first attempt
 * was applied (answer lost), the retry finds our key and returns its
 * revision instead of publishing twice.
 */
export async function publish(client: Etcd3, topic: string | Buffer, message: string | Buffer, opts: PublishOptions = {}): Promise<Published> {
  const key = Buffer.concat([topicPrefixBytes(topic), Buffer.from(messageId())]);
  let lease: string | undefined;
  if (opts.ttlSeconds !== undefined) {
    const granted = await client.leaseClient.leaseGrant({ TTL: opts.ttlSeconds });
    lease = granted.ID;
  }
  const res = await client.kv.txn({
    compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
    success: [{ request_put: { key, value: Buffer.from(message), lease } }],
    failure: [{ request_range: { key } }],
  });
  if (res.succeeded) return { key: key.toString(), revision: res.header.revision, lease };
  const kv = res.responses[0]?.response_range?.kvs[0];
  if (!kv) throw new Error(`publish to ${topic}: key ${key.toString()} was taken and is gone again`);
  return { key: key.toString(), revision: kv.mod_revision, lease };
}

/** The store's current revision (a cheap count-only read of the topic). */
async function currentRevision(client: Etcd3, topic: string | Buffer): Promise<bigint> {
  const r = prefixRange(topicPrefixBytes(topic));
  const res = await client.kv.range({ key: r.start, range_end: r.end, count_only: true });
  return BigInt(res.header.revision);
}

export interface SubscribeOptions {
  /** Replay from this revision (>= 1); default: only messages published after subscribing. */
  fromRevision?: bigint;
  log?: Logger;
}

/**
 * A live subscription. Events:
 * - `message(Message)`: every message of the topic from the start revision
 *   on, in revision order, each exactly once, across stream drops.
 * - `error(CompactedError)`: history needed to resume (or to replay from
 *   `fromRevision`) is compacted; the subscription has stopped.
 * - `disconnected(Error)` / `resumed(nextRevision)`: the stream dropped / is back.
 * Deletions under the topic (expired TTL messages) are not messages.
 * No event fires after close().
 */
export interface SubscriptionEvents {
  message: [message: Message];
  error: [err: CompactedError];
  disconnected: [err: Error];
  resumed: [nextRevision: bigint];
}

export class Subscription extends EventEmitter<SubscriptionEvents> {
  private readonly watch: ResumableWatch;
  private closed = false;

  private constructor(
    readonly topic: string | Buffer,
    client: Etcd3,
    fromRevision: bigint,
    log: Logger,
  ) {
    super();
    this.watch = new ResumableWatch(client, prefixRange(topicPrefixBytes(topic)), fromRevision, log);
    const shown = topic.toString();
    this.watch.on('batch', (events: IEvent[]) => {
      for (const ev of events) {
        if (this.closed) return;
        if (ev.type !== 'Put') continue;
        this.emit('message', { topic: shown, key: ev.kv.key.toString(), value: ev.kv.value, revision: ev.kv.mod_revision } satisfies Message);
      }
    });
    this.watch.on('error', (err: CompactedError) => this.emit('error', err));
    this.watch.on('disconnected', (err: Error) => this.emit('disconnected', err));
    this.watch.on('connected', () => this.emit('resumed', this.watch.nextRevision));
  }

  /** Subscribe; resolves once the start revision is fixed (the watch opens right after). */
  static async open(client: Etcd3, topic: string | Buffer, opts: SubscribeOptions = {}): Promise<Subscription> {
    const log = opts.log ?? componentLogger('pubsub', { topic: topic.toString() });
    const from = opts.fromRevision ?? (await currentRevision(client, topic)) + 1n;
    const sub = new Subscription(topic, client, from, log);
    // Start on the next tick so the caller can attach listeners first.
    setImmediate(() => {
      if (!sub.closed) sub.watch.start();
    });
    log.info({ event: 'pubsub.subscribed', fromRevision: from.toString() }, `subscribed to ${topic} from revision ${from}`);
    return sub;
  }

  /** The first revision not delivered yet. */
  get nextRevision(): bigint {
    return this.watch.nextRevision;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch.close();
    this.removeAllListeners();
  }
}
