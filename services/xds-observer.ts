/**
 * What the xDS control plane reports as it serves, for metrics
 * (services/xds-metrics.ts implements it over prom-client) and tests. Every
 * method is optional to implement and must return at once: they are called
 * on the serving path.
 */

/** LDS, RDS, CDS or EDS. */
export type XdsTypeName = 'LDS' | 'RDS' | 'CDS' | 'EDS';

export interface XdsObserver {
  /** An ADS stream opened (a client connected). */
  streamOpened?(): void;
  /** An ADS stream ended, for whatever reason; once per opened stream. */
  streamClosed?(): void;
  /**
   * A response was written. `latencyMs`: from the registry change behind it
   * reaching the control plane to the write, for pushes caused by a change;
   * undefined for answers to a client's own (re)subscription.
   */
  pushed?(type: XdsTypeName, resources: number, latencyMs: number | undefined): void;
  /** The client accepted the response it names (same nonce, no error_detail). */
  acked?(type: XdsTypeName): void;
  /** The client rejected a response: its node id and the error it gave. */
  nacked?(type: XdsTypeName, nodeId: string, detail: string): void;
  /** A stream was ended because of a request it could not serve (`reason` is a short code). */
  badRequest?(reason: string): void;
  /** A new snapshot is being served: its version (etcd revision) and resource count per type. */
  snapshot?(version: string, counts: Record<XdsTypeName, number>): void;
}

/** One connected xDS client as the control plane knows it (`mesh xds --metrics`: mesh_xds_client_info; the dashboard lists them). */
export interface XdsClientInfo {
  /** Its node id ('' before its first request). */
  nodeId: string;
  /** `user_agent_name user_agent_version` from its node. */
  userAgent: string;
  zone: string;
  /** What it subscribes to, per type: resource names, or `*` for a wildcard. */
  subscribed: Partial<Record<XdsTypeName, string[]>>;
  /** The last version it ACKed, per type. */
  acked: Partial<Record<XdsTypeName, string>>;
  /** Its last NACK: type, the version it refused, its error detail, when (ms since the epoch). */
  lastNack?: { type: XdsTypeName; version: string; detail: string; at: number };
}
