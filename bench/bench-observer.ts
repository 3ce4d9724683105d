import type { Etcd3 } from 'etcd3';
import { EndpointWatcher, type EndpointSnapshot } from '../balancer/endpoint-watcher';
import { componentLogger } from '../core/logger';
import { ListWatch, isDelete } from '../core/list-watch';
import { prefixRange } from '../core/resumable-watch';

/**
 * Watches a service prefix two ways, timestamping what it sees:
 * - a plain ListWatch: when a key's put/delete event reaches this process
 *   (≈ when the key appeared in / left etcd, plus one loopback hop);
 * - an EndpointWatcher (the resolver's own code, on the resolver's etcd
 *   client): when a set containing / lacking an address is delivered, i.e.
 *   when the channel's resolver hands grpc-js the change.
 * Used to split time-to-traffic and time-to-leave into their stages.
 */
export class RegistryObserver {
  readonly putSeen = new Map<string, number>();
  readonly deleteSeen = new Map<string, number>();
  readonly added = new Map<string, number>();
  readonly removed = new Map<string, number>();
  private current = new Set<string>();
  private raw: ListWatch | undefined;
  private readonly watcher: EndpointWatcher;

  private constructor(
    client: Etcd3,
    readonly keyPrefix: string,
  ) {
    this.watcher = new EndpointWatcher(client, keyPrefix, componentLogger('bench-observer'));
  }

  static async start(client: Etcd3, keyPrefix: string): Promise<RegistryObserver> {
    const o = new RegistryObserver(client, keyPrefix);
    const raw = new ListWatch(client, prefixRange(keyPrefix), componentLogger('bench-observer'));
    o.raw = raw;
    const listed = new Promise<void>((resolve) => raw.once('list', () => resolve()));
    raw.on('events', (events) => {
      const t = performance.now();
      for (const ev of events) (isDelete(ev) ? o.deleteSeen : o.putSeen).set(ev.kv.key.toString(), t);
    });
    raw.start();
    await listed;
    const first = new Promise<void>((resolve) => o.watcher.once('update', () => resolve()));
    o.watcher.on('update', (snap: EndpointSnapshot) => o.onUpdate(snap));
    o.watcher.start();
    await first;
    return o;
  }

  private onUpdate(snap: EndpointSnapshot): void {
    const t = performance.now();
    const next = new Set(snap.endpoints.map((e) => e.addr));
    for (const a of next) if (!this.current.has(a)) this.added.set(a, t);
    for (const a of this.current) if (!next.has(a)) this.removed.set(a, t);
    this.current = next;
  }

  /** Wait until `map` has an entry for `key` at or after `since`; undefined on timeout. */
  async seen(map: Map<string, number>, key: string, since: number, timeoutMs: number): Promise<number | undefined> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const t = map.get(key);
      if (t !== undefined && t >= since) return t;
      if (performance.now() > end) return undefined;
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  async close(): Promise<void> {
    this.watcher.close();
    this.raw?.close();
  }
}
