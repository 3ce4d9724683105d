/**
 * The xDS bootstrap file a gRPC client needs to resolve `xds:///<service>`
 * through `mesh xds` (gRFC A27's format, read from the file named by
 * GRPC_XDS_BOOTSTRAP, or the JSON itself in GRPC_XDS_BOOTSTRAP_CONFIG): the
 * same for gRPC's C core (C++, Python, Ruby, PHP...), grpc-go, grpc-java and
 * grpc-js-xds.
 */

export interface XdsBootstrapOptions {
  /** The control plane as a gRPC target: `host:port`, `dns:///name:port`, ... */
  serverUri: string;
  /** The client's node id, echoed in the control plane's logs (a NACK names it). */
  nodeId: string;
  /** The client's own zone, sent as its node locality. */
  zone?: string;
  /** The node's cluster field (free text; logged). */
  cluster?: string;
}

/** What the file holds (the fields gRPC reads). */
export interface XdsBootstrap {
  xds_servers: { server_uri: string; channel_creds: { type: string }[]; server_features: string[] }[];
  node: { id: string; cluster: string; locality: { zone?: string } };
}

/**
 * The bootstrap, ready to write as JSON. `server_features: ["xds_v3"]`
 * makes older clients (C core before 1.5x chose by it) speak the v3 API,
 * the only one served; `insecure` channel creds: the control plane speaks
 * plaintext gRPC, as the greeters do without TLS.
 */
export function xdsBootstrap(opts: XdsBootstrapOptions): XdsBootstrap {
  return {
    xds_servers: [{ server_uri: opts.serverUri, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
    // `locality` even when empty: grpc-js-xds refuses a bootstrap whose node has none.
    node: { id: opts.nodeId, cluster: opts.cluster ?? 'etcd-mesh', locality: opts.zone !== undefined ? { zone: opts.zone } : {} },
  };
}
