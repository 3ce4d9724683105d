import { TYPE_URL, XdsProtos, type AnyMessage, type XdsTypeUrl } from './xds-protos';
import { clusterResource, listenerResource, loadAssignmentResource, routeResource, type XdsEndpoint, type XdsLbPolicy } from './xds-resources';
import type { RegistryState } from './xds-registry';

/**
 * One immutable state of everything `mesh xds` serves, built from one
 * registry state: for each type, each resource by name, already encoded.
 *
 * - `version` is the etcd revision the state reflects, so two control planes
 *   at the same revision report the same version for the same bytes
 *   (stateless replicas), and a version says which registry it came from.
 * - A resource whose input did not change is the very object of the
 *   previous snapshot, so a stream finds what changed for its client by
 *   identity (`!==`), and nothing unchanged is encoded twice.
 */

/** One resource, encoded. The object is reused across snapshots while its content stays the same. */
export interface XdsResource {
  name: string;
  any: AnyMessage;
}

export interface XdsSnapshot {
  /** The etcd revision of the registry state (the DiscoveryResponse's version_info). */
  readonly version: string;
  /** Resources by type, then by name. */
  readonly resources: ReadonlyMap<XdsTypeUrl, ReadonlyMap<string, XdsResource>>;
  /** performance.now() when the registry change behind this snapshot reached us. */
  readonly changedAt: number;
}

/** What the resources of one service were built from, to reuse them while it stays the same. */
interface ServiceBuild {
  endpointsKey: string;
  listener: XdsResource;
  route: XdsResource;
  cluster: XdsResource;
  assignment: XdsResource;
}

/** Every field the ClusterLoadAssignment depends on, in one string (endpoints arrive in any order). */
function endpointsKey(endpoints: readonly XdsEndpoint[]): string {
  return endpoints
    .map((e) => `${e.ip}|${e.port}|${e.weight}|${e.zone}|${e.draining ? 1 : 0}`)
    .sort()
    .join('\n');
}

/**
 * Builds snapshots from registry states; keeps the last build of each
 * service so only services that changed are encoded again.
 */
export class XdsSnapshotBuilder {
  private builds = new Map<string, ServiceBuild>();

  constructor(
    private readonly lb: XdsLbPolicy,
    private readonly protos = XdsProtos.get(),
  ) {}

  build(state: RegistryState): XdsSnapshot {
    const next = new Map<string, ServiceBuild>();
    for (const [service, endpoints] of state.services) {
      const key = endpointsKey(endpoints);
      const old = this.builds.get(service);
      if (old && old.endpointsKey === key) {
        next.set(service, old);
        continue;
      }
      const p = this.protos;
      next.set(service, {
        endpointsKey: key,
        // The three that do not depend on endpoints are kept from the old build.
        listener: old?.listener ?? { name: service, any: listenerResource(service, p) },
        route: old?.route ?? { name: service, any: routeResource(service, this.lb, p) },
        cluster: old?.cluster ?? { name: service, any: clusterResource(service, this.lb, p) },
        assignment: { name: service, any: loadAssignmentResource(service, endpoints, p) },
      });
    }
    this.builds = next;
    const byType = (pick: (b: ServiceBuild) => XdsResource) => new Map([...next].map(([name, b]) => [name, pick(b)]));
    return {
      version: state.revision,
      changedAt: state.changedAt,
      resources: new Map<XdsTypeUrl, Map<string, XdsResource>>([
        [TYPE_URL.listener, byType((b) => b.listener)],
        [TYPE_URL.route, byType((b) => b.route)],
        [TYPE_URL.cluster, byType((b) => b.cluster)],
        [TYPE_URL.endpoint, byType((b) => b.assignment)],
      ]),
    };
  }
}
