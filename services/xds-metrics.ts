import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { XdsClientInfo, XdsObserver, XdsTypeName } from './xds-observer';

/**
 * `mesh xds --metrics HOST:PORT`: the control plane's own families, beside
 * the process metrics in the command's registry (services/metrics-registry).
 * Push latency runs from the registry change reaching the control plane to
 * the response written for one client; etcd's own commit time is not in it
 * (bench/bench-xds.ts measures from the etcd write).
 */
export class XdsMetrics implements XdsObserver {
  private readonly connected: Gauge;
  private readonly pushes: Counter<'type'>;
  private readonly acks: Counter<'type'>;
  private readonly nacks: Counter<'type'>;
  private readonly latency: Histogram<'type'>;
  private readonly bad: Counter<'reason'>;
  private readonly version: Gauge;
  private readonly resources: Gauge<'type'>;
  /** The connected clients, read at scrape time (set by whoever holds the server). */
  clients: () => XdsClientInfo[] = () => [];

  constructor(registry: Registry) {
    const registers = [registry];
    this.connected = new Gauge({ name: 'mesh_xds_connected_clients', help: 'ADS streams open now (one per connected xDS client).', registers });
    this.pushes = new Counter({ name: 'mesh_xds_pushes_total', help: 'DiscoveryResponses sent, by resource type (LDS, RDS, CDS, EDS).', labelNames: ['type'], registers });
    this.acks = new Counter({ name: 'mesh_xds_acks_total', help: 'Responses clients accepted (ACK), by resource type.', labelNames: ['type'], registers });
    this.nacks = new Counter({ name: 'mesh_xds_nacks_total', help: 'Responses clients rejected (NACK, with error_detail), by resource type; each is logged with the node id.', labelNames: ['type'], registers });
    this.latency = new Histogram({ name: 'mesh_xds_push_latency_seconds', help: 'From a registry change reaching the control plane to the push written to a client, by resource type.', labelNames: ['type'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers });
    this.bad = new Counter({ name: 'mesh_xds_bad_requests_total', help: 'ADS streams ended for a request that could not be served, by reason.', labelNames: ['reason'], registers });
    this.version = new Gauge({ name: 'mesh_xds_snapshot_revision', help: 'The etcd revision of the state being served (its version_info).', registers });
    const self = this;
    new Gauge({
      name: 'mesh_xds_client_info',
      help: 'One series per connected xDS client (value 1): node id, user agent, zone, what it subscribes to (type:names;...), the versions it ACKed (type:version;...), its last NACK (type@version: detail).',
      labelNames: ['node_id', 'user_agent', 'zone', 'subscribed', 'acked_version', 'last_nack'],
      registers,
      collect() {
        this.reset();
        for (const c of self.clients()) this.set(clientLabels(c), 1);
      },
    });
    this.resources = new Gauge({ name: 'mesh_xds_resources', help: 'Resources in the state being served, by type.', labelNames: ['type'], registers });
  }

  streamOpened(): void {
    this.connected.inc();
  }

  streamClosed(): void {
    this.connected.dec();
  }

  pushed(type: XdsTypeName, _resources: number, latencyMs: number | undefined): void {
    this.pushes.inc({ type });
    if (latencyMs !== undefined) this.latency.observe({ type }, latencyMs / 1000);
  }

  acked(type: XdsTypeName): void {
    this.acks.inc({ type });
  }

  nacked(type: XdsTypeName): void {
    this.nacks.inc({ type });
  }

  badRequest(reason: string): void {
    this.bad.inc({ reason });
  }

  snapshot(version: string, counts: Record<XdsTypeName, number>): void {
    this.version.set(Number(version));
    for (const [type, n] of Object.entries(counts)) this.resources.set({ type }, n);
  }
}

/** A client's labels: lists as `TYPE:a,b;TYPE:c`, so one series says all (text, for people and the dashboard). */
export function clientLabels(c: XdsClientInfo): Record<string, string> {
  const list = (m: Partial<Record<string, string | string[]>>) =>
    Object.entries(m)
      .map(([type, v]) => `${type}:${Array.isArray(v) ? v.join(',') : v}`)
      .join(';');
  // Every label is the client's own text: bounded, so one client cannot swell /metrics past a scraper's cap.
  const cap = (text: string) => text.slice(0, 500);
  return {
    node_id: cap(c.nodeId),
    user_agent: cap(c.userAgent),
    zone: cap(c.zone),
    subscribed: cap(list(c.subscribed)),
    acked_version: cap(list(c.acked)),
    last_nack: c.lastNack ? cap(`${c.lastNack.type}@${c.lastNack.version}: ${c.lastNack.detail}`) : '',
  };
}
