import { XdsProtos, type AnyMessage } from './xds-protos';

/**
 * What `mesh xds` serves for one registry service `<prefix>/<service>`:
 * pure functions from the service's registrations to the four resources a
 * gRPC proxyless client walks (A27): Listener -> RouteConfiguration ->
 * Cluster -> ClusterLoadAssignment, every one named after the service, so
 * the target is `xds:///<service>`.
 *
 * The output is a function of the input alone (endpoints sorted, no clocks,
 * no host names), so two control planes at the same etcd revision send the
 * same bytes.
 */

/** One backend as xDS serves it (from one registry key). */
export interface XdsEndpoint {
  /** The etcd key it was read from. */
  key: string;
  /** An IP literal: gRPC's xDS clients dial nothing else (grpc-js-xds NACKs a host name). */
  ip: string;
  port: number;
  /** 1..1000, from the registration's Metadata (default 100). */
  weight: number;
  /** The locality's zone; '' when the registration names none. */
  zone: string;
  /** The registration carries a draining mark: served with health DRAINING, so clients move off it. */
  draining: boolean;
}

/**
 * The Cluster's load-balancing policy. `lb_policy` is always ROUND_ROBIN,
 * which every client reads; ring_hash and least_request are offered in
 * `load_balancing_policy` (gRFC A52), ahead of round_robin, so a client
 * that knows them uses them and one that does not falls back instead of
 * rejecting the Cluster. That keeps ring_hash from gRPC's C core 1.51
 * (Debian's python3-grpcio), which reads only `lb_policy` unless
 * GRPC_EXPERIMENTAL_XDS_CUSTOM_LB_CONFIG is set, and whose ring_hash picker
 * crashes the process on its first call (SIGSEGV, grpc/grpc#31766, fixed
 * in 1.52).
 */
export type XdsLbPolicy = 'round_robin' | 'ring_hash' | 'least_request';
export const XDS_LB_POLICIES: readonly XdsLbPolicy[] = ['round_robin', 'ring_hash', 'least_request'];

const ADS_SOURCE = { ads: {}, resource_api_version: 'V3' };
const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'envoy.extensions.filters.http.router.v3.Router';

const seconds = (s: number) => ({ seconds: String(Math.floor(s)), nanos: Math.round((s % 1) * 1e9) });
const u32 = (value: number) => ({ value });

/**
 * Outlier detection (gRFC A50) on every Cluster, so an xDS client ejects a
 * backend whose calls fail, as the mesh's own picker does. Envoy's defaults
 * (5 hosts, 100 calls a host, 30 s ejections) never eject anything in a
 * service of 2-4 backends at a few hundred calls a second; these do:
 * - failure percentage: a host with over 50% of at least 10 calls failed
 *   in a 1 s interval is ejected (2 hosts are enough to compare);
 * - success rate: a host 1.9 standard deviations under the mean, among at
 *   least 3 hosts with 20 calls each;
 * - at most half of the hosts ejected; 5 s the first time, doubling up to 60 s.
 */
export const OUTLIER_DETECTION = {
  interval: seconds(1),
  base_ejection_time: seconds(5),
  max_ejection_time: seconds(60),
  max_ejection_percent: u32(50),
  enforcing_success_rate: u32(100),
  success_rate_minimum_hosts: u32(3),
  success_rate_request_volume: u32(20),
  success_rate_stdev_factor: u32(1900),
  enforcing_failure_percentage: u32(100),
  failure_percentage_minimum_hosts: u32(2),
  failure_percentage_request_volume: u32(10),
  failure_percentage_threshold: u32(50),
};

/** The Listener: an API listener (no socket) whose HttpConnectionManager gets its routes by RDS over ADS, with the router filter. */
export function listenerResource(service: string, protos = XdsProtos.get()): AnyMessage {
  const hcm = protos.encodeAny(HCM, {
    rds: { config_source: ADS_SOURCE, route_config_name: service },
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: protos.encodeAny(ROUTER, {}) }],
  });
  return protos.encodeAny('envoy.config.listener.v3.Listener', { name: service, api_listener: { api_listener: hcm } });
}

/**
 * The header whose value ring_hash hashes (gRFC A42): calls carrying the
 * same value go to the same backend while it stays. Calls without it get a
 * random hash, so they spread by the ring's weights.
 */
export const HASH_HEADER = 'x-mesh-hash-key';

/**
 * The RouteConfiguration: one virtual host for any authority, every call to
 * the service's Cluster; under ring_hash, HASH_HEADER as its hash policy.
 */
export function routeResource(service: string, lb: XdsLbPolicy = 'round_robin', protos = XdsProtos.get()): AnyMessage {
  const route: Record<string, unknown> = { cluster: service };
  if (lb === 'ring_hash') route.hash_policy = [{ header: { header_name: HASH_HEADER } }];
  return protos.encodeAny('envoy.config.route.v3.RouteConfiguration', {
    name: service,
    virtual_hosts: [{ name: service, domains: ['*'], routes: [{ match: { prefix: '' }, route }] }],
  });
}

/** An entry of `load_balancing_policy.policies`. */
function policy(protos: XdsProtos, name: string, fullName: string, config: Record<string, unknown> = {}) {
  return { typed_extension_config: { name, typed_config: protos.encodeAny(fullName, config) } };
}

const WRR_LOCALITY = 'envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality';

/** The Cluster: endpoints by EDS over ADS, the lb policy, outlier detection. */
export function clusterResource(service: string, lb: XdsLbPolicy, protos = XdsProtos.get()): AnyMessage {
  const cluster: Record<string, unknown> = {
    name: service,
    type: 'EDS',
    eds_cluster_config: { eds_config: ADS_SOURCE, service_name: service },
    connect_timeout: seconds(1),
    lb_policy: 'ROUND_ROBIN',
    outlier_detection: OUTLIER_DETECTION,
  };
  if (lb !== 'round_robin') {
    // round_robin goes inside wrr_locality, which keeps the locality weights (A52's form of ROUND_ROBIN); ring_hash weighs localities itself.
    const wrr = (child: ReturnType<typeof policy>) => policy(protos, 'wrr_locality', WRR_LOCALITY, { endpoint_picking_policy: { policies: [child] } });
    // least_request is listed bare: grpc-js-xds 1.14.1 fails the whole list (no fallback) when a wrr_locality holds a policy it lacks.
    const chosen =
      lb === 'ring_hash'
        ? // No ring sizes (clients default to 1024..8M): grpc-js-xds 1.14.1 NACKs a RingHash that sets minimum_ring_size (its uint64 arrives as a string).
          policy(protos, 'ring_hash', 'envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash', { hash_function: 'XX_HASH' })
        : policy(protos, 'least_request', 'envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest', { choice_count: u32(2) });
    cluster.load_balancing_policy = { policies: [chosen, wrr(policy(protos, 'round_robin', 'envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin'))] };
  }
  return protos.encodeAny('envoy.config.cluster.v3.Cluster', cluster);
}

/**
 * The ClusterLoadAssignment: one locality per zone (sorted; '' for
 * registrations without one), each endpoint with its weight and health.
 *
 * - A locality's weight is the sum of its serving endpoints' weights, so a
 *   client that honours locality weights but not endpoint weights (round_robin
 *   inside a locality) still sends each zone its registered share. gRPC
 *   ignores a locality without a weight; an all-draining one gets 1.
 * - Draining endpoints are sent DRAINING (gRPC clients use only HEALTHY and
 *   UNKNOWN). When every endpoint of the service is draining they are sent
 *   HEALTHY instead (Envoy's panic mode): calls go on to servers that still
 *   answer rather than all failing.
 */
export function loadAssignmentResource(service: string, endpoints: readonly XdsEndpoint[], protos = XdsProtos.get()): AnyMessage {
  const panic = endpoints.length > 0 && endpoints.every((e) => e.draining);
  const zones = new Map<string, XdsEndpoint[]>();
  for (const e of [...endpoints].sort(byAddress)) {
    let list = zones.get(e.zone);
    if (!list) zones.set(e.zone, (list = []));
    list.push(e);
  }
  const localities = [...zones.keys()].sort().map((zone) => {
    const list = zones.get(zone)!;
    const serving = list.filter((e) => panic || !e.draining);
    return {
      locality: { region: '', zone, sub_zone: '' },
      load_balancing_weight: u32(serving.reduce((sum, e) => sum + e.weight, 0) || 1),
      priority: 0,
      lb_endpoints: list.map((e) => ({
        endpoint: { address: { socket_address: { protocol: 'TCP', address: e.ip, port_value: e.port } } },
        health_status: e.draining && !panic ? 'DRAINING' : 'HEALTHY',
        // Envoy's schema wants >= 1: a weight-0 endpoint (draining, above) keeps 1 here.
        load_balancing_weight: u32(Math.max(1, e.weight)),
      })),
    };
  });
  return protos.encodeAny('envoy.config.endpoint.v3.ClusterLoadAssignment', { cluster_name: service, endpoints: localities });
}

function byAddress(a: XdsEndpoint, b: XdsEndpoint): number {
  return a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port;
}
