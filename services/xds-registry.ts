import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import type { Etcd3 } from 'etcd3';
import { EndpointWatcher, type EndpointSnapshot, type EndpointWatcherState } from '../balancer/endpoint-watcher';
import type { EndpointRecord } from '../balancer/endpoint-codec';
import { componentLogger, type Logger } from '../core/logger';
import type { XdsEndpoint } from './xds-resources';

/**
 * The registry as `mesh xds` serves it: every `<prefix>/<service>/<host:port>`
 * key, grouped by service, followed with the project's EndpointWatcher (Get,
 * then Watch from revision + 1; changes coalesced as the watcher does: a
 * short lull, at most one state per `minIntervalMs`, none held over ~100 ms).
 *
 * Rules, each logged when it applies:
 * - An endpoint whose host is not an IP literal is left out (warned once per
 *   key): gRPC's xDS clients dial IP addresses only.
 * - A registration is draining when its Metadata says `"draining": true`.
 * - A service whose last endpoint goes is kept with its last endpoints
 *   (warned), as the etcd resolver holds back a set that would empty a
 *   channel: a storm of lease expiries after an etcd outage must not tell
 *   every client its service is gone. It is replaced as soon as the service
 *   has endpoints again. (A replica started while the service is empty does
 *   not know it, so replicas differ there; everywhere else they agree.)
 * - While etcd is unreachable nothing is emitted: the last state stands.
 */

/** One published state of the registry. */
export interface RegistryState {
  /** Every service with its endpoints, sorted by name; a service listed has at least one endpoint. */
  services: ReadonlyMap<string, readonly XdsEndpoint[]>;
  /** The etcd revision this state reflects. */
  revision: string;
  /** performance.now() when the first change folded into this state reached us (push latency starts here). */
  changedAt: number;
}

export interface XdsRegistryEvents {
  /** A new state; the first one follows the first listing. */
  state: [state: RegistryState];
  /** The watch's state (LISTING, WATCHING, RETRYING...), for logs and metrics. */
  watch: [next: EndpointWatcherState, previous: EndpointWatcherState, reason: string];
}

/** The draining mark in a registration's Metadata (`draining: true`, or the codec's attribute once it has one). */
export function isDraining(rec: EndpointRecord): boolean {
  const attr = (rec.attributes as { draining?: unknown }).draining;
  if (attr === true) return true;
  const md = rec.metadata;
  if (md === null || typeof md !== 'object' || Array.isArray(md)) return false;
  const d = (md as Record<string, unknown>).draining;
  return d === true || d === 'true';
}

/** `host:port` split, the host unbracketed; undefined when the host is not an IP literal. */
export function ipAndPort(addr: string): { ip: string; port: number } | undefined {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const port = Number(addr.slice(i + 1));
  return isIP(host) ? { ip: host, port } : undefined;
}

export class XdsRegistry extends EventEmitter<XdsRegistryEvents> {
  private readonly watcher: EndpointWatcher;
  private readonly log: Logger;
  private readonly keyPrefix: string;
  private pending: EndpointSnapshot | undefined;
  private last: RegistryState | undefined;
  private readonly warned = new Set<string>();
  private closed = false;

  constructor(etcd: Etcd3, prefix: string, log?: Logger, minIntervalMs = 50) {
    super();
    this.keyPrefix = `${prefix.replace(/^\/+|\/+$/g, '')}/`;
    this.log = log ?? componentLogger('xds-registry', { prefix: this.keyPrefix });
    this.watcher = new EndpointWatcher(etcd, this.keyPrefix, this.log, minIntervalMs);
    this.watcher.on('state', (next, prev, reason) => this.emit('watch', next, prev, reason));
    this.watcher.on('error', () => undefined); // logged by the watch itself; it retries alone
    // EndpointWatcher emits `lag` (ms since the batch's first change) right
    // after each `update`: the state is published then, with its start time.
    this.watcher.on('update', (s) => (this.pending = s));
    this.watcher.on('lag', (ms) => {
      const s = this.pending;
      this.pending = undefined;
      if (s) this.publish(s, performance.now() - ms);
    });
  }

  /** The last state published; undefined until etcd answered the first listing. */
  get current(): RegistryState | undefined {
    return this.last;
  }

  get watchState(): EndpointWatcherState {
    return this.watcher.state;
  }

  start(): this {
    this.watcher.start();
    return this;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    this.removeAllListeners();
  }

  private publish(s: EndpointSnapshot, changedAt: number): void {
    const grouped = new Map<string, XdsEndpoint[]>();
    for (const rec of s.endpoints) {
      const rest = rec.key.slice(this.keyPrefix.length);
      const slash = rest.lastIndexOf('/');
      const service = slash > 0 ? rest.slice(0, slash) : '';
      const where = ipAndPort(rec.addr);
      if (service === '' || !where) {
        this.warnOnce(rec.key, service === '' ? 'is not <prefix>/<service>/<host:port>' : `has host ${JSON.stringify(rec.addr)}, not an IP address (gRPC xDS clients dial IP addresses only)`);
        continue;
      }
      let list = grouped.get(service);
      if (!list) grouped.set(service, (list = []));
      list.push({ key: rec.key, ...where, weight: rec.attributes.weight, zone: rec.attributes.zone ?? '', draining: isDraining(rec) || rec.attributes.weight === 0 });
    }
    for (const [service, endpoints] of this.last?.services ?? []) {
      if (grouped.has(service)) continue;
      this.log.warn({ event: 'xds.service_held', service, endpoints: endpoints.length, revision: s.revision }, `service ${service} has no endpoints left in etcd at revision ${s.revision}: serving its last ${endpoints.length} until it has some again`);
      grouped.set(service, endpoints as XdsEndpoint[]);
    }
    const services = new Map([...grouped.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    this.last = { services, revision: s.revision, changedAt };
    this.emit('state', this.last);
  }

  private warnOnce(key: string, why: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log.warn({ event: 'xds.endpoint_skipped', key, reason: why }, `registry key ${key} ${why}: not served over xDS`);
  }
}
