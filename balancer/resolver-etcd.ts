import * as grpc from '@grpc/grpc-js';
import type { ChannelOptions } from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { EndpointWatcher, type EndpointSnapshot } from './endpoint-watcher';
import { DEFAULT_WEIGHT, type EndpointAttributes } from './endpoint-codec';
import { componentLogger, type Logger } from '../core/logger';
import { createEtcdClient } from '../core/etcd-client';
import { DEFAULT_ETCD_ENDPOINT, endpointsFromEnv } from '../core/etcd-config';
import { SubsetPlan } from './subset-plan';
import { meshObserver } from '../core/mesh-observer';
import { countResolverWork } from './resolver-etcd-coalesce';

type GrpcUri = grpc.experimental.GrpcUri;
type ResolverListener = grpc.experimental.ResolverListener;
type Endpoint = grpc.experimental.Endpoint;

/** The URI scheme: `etcd:///<prefix>/<service>`. */
export const ETCD_SCHEME = 'etcd';

/**
 * Channel option naming which registered etcd client a channel resolves
 * through (see registerEtcdResolver). A string, so grpc-js can compare and
 * copy channel options as it likes.
 */
export const ETCD_CLIENT_OPTION = 'etcd_mesh.client';

/**
 * Resolver attribute (grpc-js merges resolver attributes into the options it
 * hands the load balancer) carrying the weights from the registry that are
 * not DEFAULT_WEIGHT: a JSON string `{"host:port": {"weight": 100}}`.
 * A string, so channel options stay comparable; the load-aware policy strips
 * it before creating subchannels.
 */
export const ENDPOINT_ATTRIBUTES_OPTION = 'etcd_mesh.endpoint_attributes';

const clients = new Map<string, Etcd3>();

/**
 * Make `etcd:///...` targets resolvable in this process, through `client`
 * (registered under `name`, default "default"). Without a registered client
 * the resolver connects to ETCD_ENDPOINTS (else ETCDCTL_ENDPOINTS, else
 * 127.0.0.1:2379) on first use.
 */
export function registerEtcdResolver(client?: Etcd3, name = 'default'): void {
  if (client) clients.set(name, client);
  grpc.experimental.registerResolver(ETCD_SCHEME, EtcdResolver);
}

/** Forget a client registered with registerEtcdResolver (the caller still owns and closes it). */
export function unregisterEtcdClient(name = 'default'): void {
  clients.delete(name);
}

function clientFor(options: ChannelOptions): Etcd3 {
  const name = (options[ETCD_CLIENT_OPTION] as string | undefined) ?? 'default';
  let client = clients.get(name);
  if (!client) {
    if (name !== 'default') throw new Error(`no etcd client registered as ${JSON.stringify(name)}`);
    // The same environment the CLI reads (ETCD_ENDPOINTS, else ETCDCTL_ENDPOINTS).
    const endpoints = (endpointsFromEnv()?.value ?? DEFAULT_ETCD_ENDPOINT).split(',').filter(Boolean);
    client = createEtcdClient({ endpoints });
    clients.set(name, client);
  }
  return client;
}

/** `services/greeter` → watched key prefix `services/greeter/`. */
export function keyPrefixOf(target: GrpcUri): string {
  const path = target.path.replace(/^\/+|\/+$/g, '');
  if (path === '' || path.split('/').some((seg) => seg === '')) {
    throw new Error(`etcd target ${JSON.stringify(grpc.experimental.uriToString(target))} must be etcd:///<prefix>/<service>`);
  }
  return `${path}/`;
}

/** `host:port` → grpc-js endpoint; IPv6 hosts come bracketed. */
function toEndpoint(addr: string): Endpoint {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[|\]$/g, '');
  return { addresses: [{ host, port: Number(addr.slice(i + 1)) }] };
}

/**
 * grpc-js resolver for `etcd:///<prefix>/<service>` (Go's etcd
 * `naming/resolver` semantics): hands grpc-js the full endpoint set built
 * from a Get and a Watch from revision + 1, on every change.
 *
 * Two policies beyond Go's, both for "zero failed RPCs while etcd is sick":
 * - While etcd is unreachable the last good set stands (the watcher simply
 *   delivers nothing); an error is reported only if there was never a set.
 * - A set that would empty a channel that had endpoints is held back: a storm
 *   of lease expiries after an etcd outage deletes every key for a moment
 *   before the servers re-register, and handing grpc-js `[]` then would fail
 *   every call. The held set is replaced by the next non-empty one.
 *
 * `updateResolution()` never triggers a Get while the watch is live: the
 * watch already pushes every change, and answering each re-resolution
 * request with a result would spin grpc-js's resolve/backoff loop.
 */
export class EtcdResolver implements grpc.experimental.Resolver {
  private watcher: EndpointWatcher | undefined;
  private delivered = 0;
  private readonly keyPrefix: string;
  private readonly log: Logger;
  private everDelivered = false;
  /** Deterministic subsetting (subset-plan.ts), from the channel options; undefined: every backend. */
  private readonly subset: SubsetPlan | undefined;
  /** The last snapshot, picked from again when the subset plan says its choice changed (a new membership rank). */
  private lastSnap: EndpointSnapshot | undefined;
  /** The endpoints of the last delivery by address, handed over again while their address stays. */
  private endpointCache = new Map<string, Endpoint>();

  constructor(
    private readonly target: GrpcUri,
    private readonly listener: ResolverListener,
    private readonly options: ChannelOptions,
  ) {
    this.keyPrefix = keyPrefixOf(target);
    this.log = componentLogger('resolver', { target: grpc.experimental.uriToString(target) });
    this.subset = SubsetPlan.fromOptions(options, this.keyPrefix, this.log);
    this.subset?.on('change', () => this.lastSnap && this.onUpdate(this.lastSnap));
  }

  /** A valid host name for `:authority`: the service, i.e. the last path segment. */
  static getDefaultAuthority(target: GrpcUri): string {
    const segs = keyPrefixOf(target).split('/').filter(Boolean);
    const service = segs[segs.length - 1];
    return /^[A-Za-z0-9.-]+$/.test(service) ? service : 'localhost';
  }

  updateResolution(): void {
    if (this.watcher) return;
    let client: Etcd3;
    try {
      client = clientFor(this.options);
    } catch (err) {
      // No etcd to ask (unknown client name, empty ETCD_ENDPOINTS): fail the
      // channel's calls with the reason, never throw into grpc-js's call path.
      setImmediate(() =>
        this.listener(grpc.experimental.statusOrFromError({ code: grpc.status.UNAVAILABLE, details: `etcd resolver: ${(err as Error).message}` }), {}, null, 'no etcd client'),
      );
      return;
    }
    const watcher = new EndpointWatcher(client, this.keyPrefix, this.log);
    this.watcher = watcher;
    this.subset?.attach(client);
    // Each update is one full-set rebuild (coalesced: resolver-etcd-coalesce.ts).
    watcher.on('update', (snap: EndpointSnapshot) => {
      countResolverWork('rebuilds');
      this.onUpdate(snap);
    });
    watcher.on('state', (next) => meshObserver()?.watchState?.(this.keyPrefix, next));
    watcher.on('lag', (ms: number) => meshObserver()?.deliveryLag?.(this.keyPrefix, ms));
    watcher.on('error', (err: Error) => {
      if (this.everDelivered) return;
      this.listener(
        grpc.experimental.statusOrFromError({ code: grpc.status.UNAVAILABLE, details: `etcd unreachable while resolving ${this.keyPrefix}: ${err.message}` }),
        {},
        null,
        'etcd unreachable',
      );
    });
    watcher.start();
  }

  destroy(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.delivered = 0;
    this.everDelivered = false;
    this.subset?.reset();
    this.lastSnap = undefined;
    this.endpointCache = new Map();
  }

  private onUpdate(snap: EndpointSnapshot): void {
    // Two keys naming one address (hand-written duplicates): the last read wins.
    const byAddr = new Map<string, EndpointAttributes>();
    for (const e of snap.endpoints) byAddr.set(e.addr, e.attributes);
    const registered = byAddr.size;
    // Subsetting picks from the whole registry, so the held-back rule below
    // sees an empty subset only when the registry itself is empty; the plan
    // may hold a delivery back while it waits for its membership rank.
    this.lastSnap = snap;
    let addrs: Iterable<string> = byAddr.keys();
    if (this.subset) {
      const picked = this.subset.pick([...byAddr.keys()], snap.revision);
      if (picked === undefined) return;
      addrs = picked;
    }
    // Every delivery is the full set, but one during a fleet's churn must not
    // cost an allocation per endpoint per resolver: endpoint objects are
    // reused from the last delivery, and only weights that differ from the
    // default travel in the attributes option (the policy reads nothing else
    // from it), written as JSON text directly rather than through an object
    // of N keys.
    const cache = new Map<string, Endpoint>();
    const endpoints: Endpoint[] = [];
    let weights = '';
    for (const addr of addrs) {
      const ep = this.endpointCache.get(addr) ?? toEndpoint(addr);
      cache.set(addr, ep);
      endpoints.push(ep);
      const weight = byAddr.get(addr)!.weight;
      if (weight !== DEFAULT_WEIGHT) weights += `${weights ? ',' : ''}${JSON.stringify(addr)}:{"weight":${weight}}`;
    }
    if (endpoints.length === 0 && this.delivered > 0) {
      countResolverWork('heldEmpty');
      this.log.warn({ event: 'resolver.empty_held', revision: snap.revision, keeping: this.delivered }, 'registry is empty; keeping the last endpoint set until a backend registers');
      return;
    }
    this.endpointCache = cache;
    this.delivered = endpoints.length;
    this.everDelivered = true;
    if (this.log.isLevelEnabled('debug')) this.log.debug({ event: 'resolver.update', revision: snap.revision, endpoints: [...cache.keys()], registered }, `resolved ${endpoints.length} endpoints`);
    meshObserver()?.resolverUpdate?.(this.keyPrefix, endpoints.length);
    countResolverWork('deliveries');
    this.listener(grpc.experimental.statusOrFromValue(endpoints), { [ENDPOINT_ATTRIBUTES_OPTION]: `{${weights}}` }, null, `etcd revision ${snap.revision}`);
  }
}
