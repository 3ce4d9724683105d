import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
// The index first: it registers the well-known google/protobuf files (descriptor.proto, ...) the Envoy files import.
import '@grpc/proto-loader';
import { loadProtosWithOptionsSync } from '@grpc/proto-loader/build/src/util';

/**
 * The Envoy xDS API as the `mesh xds` control plane speaks it: the proto
 * files @grpc/grpc-js-xds ships under its deps/ folder (the same files the
 * Node xDS client decodes with), loaded once with @grpc/proto-loader. Nothing
 * here is written by hand but the names of the files and types we use.
 *
 * Resources are encoded once per change (`encodeAny`), so a push to N
 * clients copies bytes and never re-encodes a Listener or an endpoint list.
 */

type Root = ReturnType<typeof loadProtosWithOptionsSync>;
type MessageType = ReturnType<Root['lookupType']>;

/** The four resource types gRPC's proxyless clients ask for, as type URLs. */
export const TYPE_URL = {
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
} as const;

export type XdsTypeUrl = (typeof TYPE_URL)[keyof typeof TYPE_URL];

/** Short names for logs and metric labels (LDS, RDS, CDS, EDS). */
export const TYPE_SHORT: Record<XdsTypeUrl, 'LDS' | 'RDS' | 'CDS' | 'EDS'> = {
  [TYPE_URL.listener]: 'LDS',
  [TYPE_URL.route]: 'RDS',
  [TYPE_URL.cluster]: 'CDS',
  [TYPE_URL.endpoint]: 'EDS',
};

export const XDS_TYPE_URLS: readonly XdsTypeUrl[] = [TYPE_URL.cluster, TYPE_URL.endpoint, TYPE_URL.listener, TYPE_URL.route];

export function isXdsTypeUrl(url: string): url is XdsTypeUrl {
  return (XDS_TYPE_URLS as readonly string[]).includes(url);
}

/** `google.protobuf.Any` as it travels: the type URL and the encoded message. */
export interface AnyMessage {
  type_url: string;
  value: Buffer;
}

/** `envoy.config.core.v3.Node`, as decoded (proto field names). */
export interface XdsNode {
  id: string;
  cluster: string;
  locality: { region: string; zone: string; sub_zone: string } | null;
  user_agent_name: string;
  user_agent_version?: string;
  client_features: string[];
}

/** `DiscoveryRequest` as decoded (defaults filled in: '' and []). */
export interface DiscoveryRequest {
  version_info: string;
  node: XdsNode | null;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  /** Set on a NACK: why the client rejected the response it names by nonce. */
  error_detail: { code: number; message: string } | null;
}

/** `DiscoveryResponse` as we send it (resources already encoded). */
export interface DiscoveryResponse {
  version_info: string;
  resources: AnyMessage[];
  type_url: string;
  nonce: string;
}

/** The files loaded: ADS, the four resources, and what their Any fields carry. */
const FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto',
  'envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto',
  'envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto',
  'envoy/extensions/load_balancing_policies/wrr_locality/v3/wrr_locality.proto',
];

const DECODE_OPTIONS = { longs: String, enums: String, defaults: true, oneofs: true } as const;

export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';

/**
 * The loaded protos. `XdsProtos.get()` parses the files once per process
 * (about 0.2 s), on first use, so commands that never serve xDS never pay.
 */
export class XdsProtos {
  private static loaded: XdsProtos | undefined;
  private readonly types = new Map<string, MessageType>();
  private readonly request: MessageType;
  private readonly response: MessageType;

  private constructor(private readonly root: Root) {
    this.request = this.type('envoy.service.discovery.v3.DiscoveryRequest');
    this.response = this.type('envoy.service.discovery.v3.DiscoveryResponse');
  }

  static get(): XdsProtos {
    if (!XdsProtos.loaded) {
      const deps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
      const includeDirs = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(deps, d));
      XdsProtos.loaded = new XdsProtos(loadProtosWithOptionsSync(FILES, { keepCase: true, includeDirs }));
    }
    return XdsProtos.loaded;
  }

  /** A message type by full name (`envoy.config.listener.v3.Listener`); throws on a name not loaded. */
  type(fullName: string): MessageType {
    let t = this.types.get(fullName);
    if (!t) this.types.set(fullName, (t = this.root.lookupType(fullName)));
    return t;
  }

  /**
   * `object` (proto field names, enums as their names, Any fields already
   * AnyMessage) encoded as an Any of type `fullName`. Field names the type
   * lacks are dropped by protobufjs: the resource tests decode what we send.
   */
  encodeAny(fullName: string, object: Record<string, unknown>): AnyMessage {
    const t = this.type(fullName);
    return { type_url: `type.googleapis.com/${fullName}`, value: Buffer.from(t.encode(t.fromObject(object)).finish()) };
  }

  /** An Any decoded back to a plain object (tests, the probe client, logs). */
  decodeAny(any: AnyMessage): Record<string, unknown> {
    const t = this.type(any.type_url.slice(any.type_url.lastIndexOf('/') + 1));
    return t.toObject(t.decode(any.value), DECODE_OPTIONS) as Record<string, unknown>;
  }

  /**
   * The ADS service for grpc-js, built from the loaded types (what
   * proto-loader's loadSync would build, without parsing the files twice).
   * Both directions of both methods, so the same definition serves and, in
   * tests and the bench, calls.
   */
  adsService(): grpc.ServiceDefinition {
    const req = this.request;
    const res = this.response;
    const method = (name: string, requestType: MessageType, responseType: MessageType) => ({
      path: `/${ADS_SERVICE}/${name}`,
      requestStream: true,
      responseStream: true,
      originalName: name[0].toLowerCase() + name.slice(1),
      requestSerialize: (m: object) => Buffer.from(requestType.encode(requestType.fromObject(m as Record<string, unknown>)).finish()),
      // A malformed request throws here; grpc-js then ends that stream alone (INTERNAL).
      requestDeserialize: (b: Buffer) => requestType.toObject(requestType.decode(b), DECODE_OPTIONS),
      // Our own responses are built with the right shapes: encoded as they are, no conversion pass.
      responseSerialize: (m: object) => Buffer.from(responseType.encode(m).finish()),
      responseDeserialize: (b: Buffer) => responseType.toObject(responseType.decode(b), DECODE_OPTIONS),
    });
    return {
      StreamAggregatedResources: method('StreamAggregatedResources', req, res),
      DeltaAggregatedResources: method('DeltaAggregatedResources', this.type('envoy.service.discovery.v3.DeltaDiscoveryRequest'), this.type('envoy.service.discovery.v3.DeltaDiscoveryResponse')),
    } as unknown as grpc.ServiceDefinition;
  }
}
