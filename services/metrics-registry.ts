import * as grpc from '@grpc/grpc-js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ClientCallTally, MeshObserver } from '../core/mesh-observer';
import { Tally } from './metrics-tally';
import { HistogramCell, TallyHistogram } from './metrics-histogram';
import { GRPC_HANDLING_BUCKETS, GRPC_LABELS, GRPC_LABELS_CODE, grpcCodeName, grpcType, splitMethodPath } from './metrics-grpc-labels';

/** States a `mesh_*_state` gauge reports, one series each, 1 for the current one (the Prometheus "state set" idiom). */
const WATCH_STATES = ['IDLE', 'LISTING', 'WATCHING', 'RETRYING', 'CLOSED'];
const LEASE_STATES = ['IDLE', 'GRANTING', 'REGISTERED', 'LOST', 'CLOSED'];
const HEALTH_STATES = ['IDLE', 'WATCHING', 'SERVING', 'NOT_SERVING', 'UNIMPLEMENTED', 'FAILED'];

/**
 * The metrics of one mesh process, in one prom-client Registry (never the
 * global one, so two in a test process do not collide): go-grpc-prometheus's
 * client and server families, the mesh's own `mesh_*`, and prom-client's
 * default process metrics. It is also the process's MeshObserver: install it
 * with setMeshObserver before any channel is built.
 */
export class MeshMetrics implements MeshObserver {
  readonly registry = new Registry();
  private readonly serverStarted: Counter<(typeof GRPC_LABELS)[number]>;
  private readonly serverHandled: Counter<(typeof GRPC_LABELS_CODE)[number]>;
  private readonly serverSeconds: TallyHistogram;
  private readonly clientStarted: Counter<(typeof GRPC_LABELS)[number]>;
  private readonly clientHandled: Counter<(typeof GRPC_LABELS_CODE)[number]>;
  private readonly clientSeconds: TallyHistogram;
  private readonly picks: Counter<'backend'>;
  private readonly outstandingCalls: Gauge<'backend'>;
  private readonly extraAttempts: Counter<'kind'>;
  private readonly refusals: Counter;
  private readonly endpoints: Gauge<'registry'>;
  private readonly updates: Counter<'registry'>;
  private readonly watch: Gauge<'registry' | 'state'>;
  private readonly lag: Histogram<'registry'>;
  private readonly lease: Gauge<'key' | 'state'>;
  private readonly reregistrations: Counter<'key'>;
  private readonly health: Gauge<'backend' | 'state'>;
  private readonly ejected: Gauge<'backend'>;
  private readonly ejections: Counter<'backend' | 'reason'>;

  // Hot-path counts (per call or attempt), handed to prom-client at scrape time.
  private readonly pickTally = new Tally<'backend'>();
  private readonly outstandingTally = new Tally<'backend'>();
  private readonly startedTally = { server: new Tally<(typeof GRPC_LABELS)[number]>(), client: new Tally<(typeof GRPC_LABELS)[number]>() };
  private readonly handledTally = { server: new Tally<(typeof GRPC_LABELS_CODE)[number]>(), client: new Tally<(typeof GRPC_LABELS_CODE)[number]>() };

  constructor() {
    const registers = [this.registry];
    const tallies = this;
    // The event-loop delay monitor wakes the process once per precision
    // interval, whether or not anyone scrapes: 100 ms (prom-client's default
    // is 10 ms) keeps that idle cost off a busy client's CPU.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 100 });
    this.serverStarted = new Counter({ name: 'grpc_server_started_total', help: 'Total number of RPCs started on the server.', labelNames: GRPC_LABELS, registers, collect() { tallies.startedTally.server.flushInto(this); } });
    this.serverHandled = new Counter({ name: 'grpc_server_handled_total', help: 'Total number of RPCs completed on the server, regardless of success or failure.', labelNames: GRPC_LABELS_CODE, registers, collect() { tallies.handledTally.server.flushInto(this); } });
    this.serverSeconds = new TallyHistogram('grpc_server_handling_seconds', 'Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.', GRPC_HANDLING_BUCKETS, this.registry);
    this.clientStarted = new Counter({ name: 'grpc_client_started_total', help: 'Total number of RPCs started on the client.', labelNames: GRPC_LABELS, registers, collect() { tallies.startedTally.client.flushInto(this); } });
    this.clientHandled = new Counter({ name: 'grpc_client_handled_total', help: 'Total number of RPCs completed by the client, regardless of success or failure.', labelNames: GRPC_LABELS_CODE, registers, collect() { tallies.handledTally.client.flushInto(this); } });
    this.clientSeconds = new TallyHistogram('grpc_client_handling_seconds', 'Histogram of response latency (seconds) of the gRPC until it is finished by the application.', GRPC_HANDLING_BUCKETS, this.registry);
    this.picks = new Counter({ name: 'mesh_lb_picks_total', help: 'Calls (attempts) the load-aware picker gave each backend.', labelNames: ['backend'], registers, collect() { tallies.pickTally.flushInto(this); } });
    this.outstandingCalls = new Gauge({ name: 'mesh_lb_outstanding_calls', help: 'Calls in flight on each backend, as the load-aware picker counts them.', labelNames: ['backend'], registers, collect() { tallies.outstandingTally.setInto(this); } });
    this.extraAttempts = new Counter({ name: 'mesh_client_extra_attempts_total', help: 'Extra attempts of idempotent calls: kind="hedge" (sent after the hedging delay) or kind="retry" (after UNAVAILABLE).', labelNames: ['kind'], registers });
    this.refusals = new Counter({ name: 'mesh_retry_budget_refused_total', help: 'Extra attempts the retry budget refused.', registers });
    this.endpoints = new Gauge({ name: 'mesh_resolver_endpoints', help: 'Endpoints the etcd resolver last handed the channel.', labelNames: ['registry'], registers });
    this.updates = new Counter({ name: 'mesh_resolver_updates_total', help: 'Endpoint sets the etcd resolver handed the channel.', labelNames: ['registry'], registers });
    this.watch = new Gauge({ name: 'mesh_resolver_watch_state', help: 'State of the registry watch: 1 for the current state, 0 for the others.', labelNames: ['registry', 'state'], registers });
    this.lag = new Histogram({ name: 'mesh_resolver_delivery_lag_seconds', help: 'From the first registry change of a batch to its delivery to the channel (coalescing and rate limit included).', labelNames: ['registry'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers });
    this.lease = new Gauge({ name: 'mesh_registration_lease_state', help: 'State of the lease registration: 1 for the current state, 0 for the others.', labelNames: ['key', 'state'], registers });
    this.ejected = new Gauge({ name: 'mesh_lb_backend_ejected', help: 'Whether the load-aware policy ejects each backend now (1) or not (0).', labelNames: ['backend'], registers });
    this.ejections = new Counter({ name: 'mesh_lb_ejections_total', help: 'Ejections by the load-aware policy, by backend and reason (latency: far slower than its peers; failures: failing far more often than its peers).', labelNames: ['backend', 'reason'], registers });
    this.health = new Gauge({ name: 'mesh_lb_backend_health', help: 'Client-side health check (gRPC A17) of each backend: 1 for the current state, 0 for the others.', labelNames: ['backend', 'state'], registers });
    this.reregistrations = new Counter({ name: 'mesh_registration_reregistrations_total', help: 'Registrations written again under a fresh lease after the lease was lost.', labelNames: ['key'], registers });
  }

  // One cell per backend, looked up by address (a Map get per call, no label hashing).
  private readonly pickCells = new Map<string, { n: number }>();
  private readonly outstandingCells = new Map<string, { n: number }>();

  picked(backend: string): void {
    let c = this.pickCells.get(backend);
    if (!c) this.pickCells.set(backend, (c = this.pickTally.cell({ backend })));
    c.n++;
  }

  outstanding(backend: string, delta: 1 | -1): void {
    let c = this.outstandingCells.get(backend);
    if (!c) this.outstandingCells.set(backend, (c = this.outstandingTally.cell({ backend })));
    c.n += delta;
  }

  extraAttempt(kind: 'hedge' | 'retry'): void {
    this.extraAttempts.inc({ kind });
  }

  budgetRefused(): void {
    this.refusals.inc();
  }

  resolverUpdate(registry: string, endpoints: number): void {
    this.endpoints.set({ registry }, endpoints);
    this.updates.inc({ registry });
  }

  watchState(registry: string, state: string): void {
    for (const s of new Set([...WATCH_STATES, state])) this.watch.set({ registry, state: s }, s === state ? 1 : 0);
  }

  deliveryLag(registry: string, ms: number): void {
    this.lag.observe({ registry }, ms / 1000);
  }

  ejection(backend: string, ejected: boolean, reason: string): void {
    this.ejected.set({ backend }, ejected ? 1 : 0);
    if (ejected) this.ejections.inc({ backend, reason });
  }

  healthState(backend: string, state: string): void {
    if (state === 'CLOSED') {
      for (const s of HEALTH_STATES) this.health.remove({ backend, state: s });
      return;
    }
    for (const s of new Set([...HEALTH_STATES, state])) this.health.set({ backend, state: s }, s === state ? 1 : 0);
  }

  leaseState(key: string, state: string, regrant: boolean): void {
    for (const s of new Set([...LEASE_STATES, state])) this.lease.set({ key, state: s }, s === state ? 1 : 0);
    if (regrant) this.reregistrations.inc({ key });
  }

  /** go-grpc-prometheus's client metrics, one logical call each (attempts, hedges and retries are one call): fed by the mesh channel's interceptor. */
  clientCall(path: string, requestStream: boolean, responseStream: boolean): ClientCallTally {
    const type = grpcType(requestStream, responseStream);
    const k = `${type} ${path}`;
    let m = this.clientMethods.get(k);
    if (!m) this.clientMethods.set(k, (m = methodTally(methodChildren(path, type, this.startedTally.client, this.handledTally.client, this.clientSeconds))));
    m.children.started.n++;
    return m;
  }

  private readonly clientMethods = new Map<string, ClientCallTally & { children: MethodChildren }>();

  /**
   * Wrap a unary handler with go-grpc-prometheus's server metrics. `path`
   * is the method's `/pkg.Service/Method`. The code is the one the handler
   * answers with (OK, or the error's `code`, UNKNOWN without one).
   */
  unaryServerHandler<Req, Res>(path: string, handler: grpc.handleUnaryCall<Req, Res>): grpc.handleUnaryCall<Req, Res> {
    const m = methodChildren(path, 'unary', this.startedTally.server, this.handledTally.server, this.serverSeconds);
    return (call, callback) => {
      const t0 = performance.now();
      m.started.n++;
      handler(call, (err, value, trailer, flags) => {
        const code = err ? ((err as Partial<grpc.StatusObject>).code ?? grpc.status.UNKNOWN) : grpc.status.OK;
        m.handled(code).n++;
        m.seconds.observe((performance.now() - t0) / 1000);
        callback(err, value, trailer, flags);
      });
    };
  }
}

/** The label children of one method's three families; `handled` per status code, made on first use. */
interface MethodChildren {
  started: { n: number };
  handled(code: number): { n: number };
  seconds: HistogramCell;
}

function methodTally(children: MethodChildren): ClientCallTally & { children: MethodChildren } {
  return {
    children,
    ended(code, ms) {
      children.handled(code).n++;
      children.seconds.observe(ms / 1000);
    },
  };
}

function methodChildren(
  path: string,
  type: string,
  started: Tally<(typeof GRPC_LABELS)[number]>,
  handled: Tally<(typeof GRPC_LABELS_CODE)[number]>,
  seconds: TallyHistogram,
): MethodChildren {
  const { service, method } = splitMethodPath(path);
  const labels = { grpc_type: type, grpc_service: service, grpc_method: method };
  const byCode = new Map<number, { n: number }>();
  return {
    started: started.cell(labels),
    seconds: seconds.cell(labels),
    handled(code) {
      let c = byCode.get(code);
      if (!c) byCode.set(code, (c = handled.cell({ ...labels, grpc_code: grpcCodeName(code) })));
      return c;
    },
  };
}
