import * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import { StateCell } from '../core/state-cell';
import { TYPE_SHORT, XdsProtos, type DiscoveryRequest, type DiscoveryResponse } from './xds-protos';
import { XdsRegistry, type RegistryState } from './xds-registry';
import { XdsSnapshotBuilder, type XdsSnapshot } from './xds-snapshot';
import { AdsStream } from './xds-stream';
import type { XdsLbPolicy } from './xds-resources';
import type { XdsClientInfo, XdsObserver, XdsTypeName } from './xds-observer';

/**
 * `mesh xds`: an xDS control plane (the Aggregated Discovery Service, state
 * of the world) fed by the etcd registry, so any gRPC client resolving
 * `xds:///<service>` balances over what etcd lists.
 *
 * Stateless by design: everything served is a function of the registry at
 * one etcd revision (XdsSnapshotBuilder), so replicas behind one address
 * serve the same versions, and a client moving from one to another (or to a
 * restarted one) resyncs by subscribing again. No state is written anywhere.
 *
 * - STARTING: binding. WAITING: bound, the registry not listed yet; requests
 *   are held, never answered with an empty state. SERVING. CLOSED: final.
 * - While etcd is unreachable the last snapshot is served (nothing new is
 *   built); a stream opened then gets it too.
 * - The incremental variant (DeltaAggregatedResources) answers UNIMPLEMENTED:
 *   the clients here (gRPC C core, grpc-js-xds; also grpc-go and grpc-java)
 *   speak SotW only.
 */

export type XdsServerState = 'STARTING' | 'WAITING' | 'SERVING' | 'CLOSED';

export interface XdsServerOptions {
  /** Where to listen; port 0 picks a free one (see `address`). */
  host: string;
  port: number;
  /** Registry key prefix (`services`). */
  prefix: string;
  lb?: XdsLbPolicy;
  observer?: XdsObserver;
  log?: Logger;
  /** Least time between two registry states (coalescing churn); default 50 ms. */
  minIntervalMs?: number;
}

export class XdsServer {
  private readonly cell: StateCell<XdsServerState>;
  private readonly streams = new Set<AdsStream>();
  private readonly builder: XdsSnapshotBuilder;
  private registry: XdsRegistry | undefined;
  private snap: XdsSnapshot | undefined;
  private closing: Promise<void> | undefined;
  private readonly observer: XdsObserver;

  private constructor(
    private readonly server: grpc.Server,
    /** `host:port` actually bound. */
    readonly address: string,
    private readonly log: Logger,
    opts: XdsServerOptions,
  ) {
    this.observer = opts.observer ?? {};
    this.builder = new XdsSnapshotBuilder(opts.lb ?? 'round_robin');
    this.cell = new StateCell<XdsServerState>('STARTING', log, 'xds');
  }

  /**
   * Bind, then follow the registry. Rejects with a one-line Error when the
   * address cannot be bound (taken, not local); nothing is left running.
   */
  static async start(etcd: Etcd3, opts: XdsServerOptions): Promise<XdsServer> {
    const log = opts.log ?? componentLogger('xds', { prefix: opts.prefix });
    const protos = XdsProtos.get();
    // ADS streams live for hours: no connection age limit; keepalive pings from clients allowed down to 10 s.
    const server = new grpc.Server({ 'grpc.keepalive_permit_without_calls': 1, 'grpc.http2.min_ping_interval_without_data_ms': 10_000 });
    let self: XdsServer | undefined;
    server.addService(protos.adsService(), {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) => {
        if (self) self.accept(call);
        else call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'control plane starting' });
      },
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        log.info({ event: 'xds.delta_refused', peer: call.getPeer() }, 'incremental xDS asked for: not served (state of the world only)');
        call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'incremental (delta) xDS is not served; use state of the world (StreamAggregatedResources)' });
      },
    });
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host}:${opts.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    ).catch((err: Error) => {
      server.forceShutdown();
      throw new Error(`cannot listen on ${host}:${opts.port}: ${bindReason(err)}`);
    });
    self = new XdsServer(server, `${host}:${port}`, log, opts);
    self.cell.set('WAITING', `listening on ${self.address}; listing ${opts.prefix}/ in etcd`, { address: self.address });
    self.follow(etcd, opts);
    return self;
  }

  get state(): XdsServerState {
    return this.cell.value;
  }

  /** The snapshot served now (undefined while WAITING). */
  get snapshot(): XdsSnapshot | undefined {
    return this.snap;
  }

  /** Every client connected now: what it subscribes to, has ACKed, last NACKed. */
  clientInfo(): XdsClientInfo[] {
    return [...this.streams].map((s) => s.info);
  }

  /** Node ids of the clients connected now (one per open ADS stream; '' before its first request). */
  get clients(): string[] {
    return [...this.streams].map((s) => s.node);
  }

  /** End every stream, stop serving and watching. Idempotent; resolves once the port is released. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.cell.set('CLOSED', 'close() called', { clients: this.streams.size });
      this.registry?.close();
      for (const s of [...this.streams]) s.end('control plane shutting down');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.server.forceShutdown();
          resolve();
        }, 1_000);
        this.server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    })();
    return this.closing;
  }

  private follow(etcd: Etcd3, opts: XdsServerOptions): void {
    const registry = new XdsRegistry(etcd, opts.prefix, this.log, opts.minIntervalMs);
    this.registry = registry;
    registry.on('state', (s) => this.serve(s));
    registry.on('watch', (next, _prev, reason) => {
      if (next === 'RETRYING') this.log.warn({ event: 'xds.etcd_unreachable', version: this.snap?.version, reason }, `etcd did not answer (${reason}): serving the last state${this.snap ? ` (version ${this.snap.version})` : ' once there is one'}`);
    });
    registry.start();
  }

  private serve(state: RegistryState): void {
    if (this.cell.is('CLOSED')) return;
    const snap = this.builder.build(state);
    this.snap = snap;
    const counts = {} as Record<XdsTypeName, number>;
    for (const [type, m] of snap.resources) counts[TYPE_SHORT[type]] = m.size;
    this.observer.snapshot?.(snap.version, counts);
    this.cell.set('SERVING', 'registry listed', { version: snap.version, services: state.services.size });
    this.log.debug({ event: 'xds.snapshot', version: snap.version, services: state.services.size }, 'snapshot');
    for (const s of this.streams) s.onSnapshot(snap);
  }

  private accept(call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void {
    if (this.cell.is('CLOSED')) {
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'control plane shutting down' });
      return;
    }
    const stream = new AdsStream(call, () => this.snap, this.log, this.observer, (s) => this.streams.delete(s));
    this.streams.add(stream);
  }
}

/** grpc-js's bind error, down to its cause (`address already in use`, ...). */
function bindReason(err: Error): string {
  const m = /(EADDRINUSE|EADDRNOTAVAIL|EACCES)/.exec(err.message);
  if (m?.[1] === 'EADDRINUSE') return 'address already in use';
  if (m?.[1] === 'EADDRNOTAVAIL') return 'address not available on this machine';
  if (m?.[1] === 'EACCES') return 'permission denied';
  return err.message.split('\n')[0];
}
