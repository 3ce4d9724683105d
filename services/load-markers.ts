import type { Etcd3 } from 'etcd3';
import { EndpointWatcher } from '../balancer/endpoint-watcher';
import { componentLogger } from '../core/logger';
import type { LoadMarker } from './load-report';

/**
 * Resolver updates as markers for the report: the same list-and-watch of the
 * service's prefix the etcd resolver runs (EndpointWatcher), so each marker
 * is an endpoint set the resolver was handed, with what changed. Times are
 * ms after `origin` (performance.now() when the load began). Idempotent close.
 */
export class ResolverMarkers {
  readonly markers: LoadMarker[] = [];
  private readonly watcher: EndpointWatcher;
  private last = new Set<string>();
  private closed = false;

  constructor(client: Etcd3, keyPrefix: string, private origin = performance.now()) {
    this.watcher = new EndpointWatcher(client, keyPrefix.endsWith('/') ? keyPrefix : `${keyPrefix}/`, componentLogger('load-markers'));
    this.watcher.on('update', (snap) => {
      const now = new Set(snap.endpoints.map((e) => e.addr));
      const added = [...now].filter((a) => !this.last.has(a));
      const removed = [...this.last].filter((a) => !now.has(a));
      this.last = now;
      const diff = [...added.map((a) => `+${a}`), ...removed.map((a) => `-${a}`)].join(' ');
      this.markers.push({ tMs: Math.max(0, performance.now() - this.origin), kind: 'resolver', text: `resolver: ${now.size} endpoints${diff ? ` (${diff})` : ''} @rev ${snap.revision}` });
    });
    this.watcher.start();
  }

  /** Times count from here on (call when the load begins). */
  setOrigin(origin: number): void {
    for (const m of this.markers) m.tMs = 0;
    this.origin = origin;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
  }
}
