import type * as grpc from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import type { Etcd3 } from 'etcd3';

/**
 * The life of a MeshServer, in one state cell (each transition logged
 * `server.state OLD -> NEW`); the gRPC health status follows it:
 *
 * - STARTING: binding, then registering. Health NOT_SERVING.
 * - SERVING: bound and registered (or serving unregistered, without `etcd`).
 *   Health SERVING for "" and every named service.
 * - NOT_SERVING: the owner said so (`setServing(false)`: a dependency is
 *   down). Health NOT_SERVING, and the registration is revoked, so even a
 *   client that does no health checking (a Go client on etcd's resolver)
 *   drops it; `setServing(true)` registers again under a new lease.
 * - DRAINING: shutting down (SIGTERM, `shutdown()`). Health NOT_SERVING
 *   from the first moment, then the lease is revoked, calls are answered
 *   while clients move away, open health Watches are ended, in-flight calls
 *   finish.
 * - STOPPED: final.
 */
export type MeshServerState = 'STARTING' | 'SERVING' | 'NOT_SERVING' | 'DRAINING' | 'STOPPED';

/** What `MeshServer` serves, where, and how it registers. */
export interface MeshServerOptions {
  /**
   * Your grpc-js Server, services added. Omit to have one built here
   * (`serverOptions`; add services with `addService`): a server built here
   * counts its calls, so a drain ends as soon as calls stop arriving after
   * the revoke; on yours it cannot see calls and answers for the whole
   * `drainGraceMs`. Either way MeshServer adds `grpc.health.v1.Health` (and
   * reflection if asked): the server must not serve them already.
   */
  server?: grpc.Server;
  /** Options of the server built here when `server` is omitted. */
  serverOptions?: grpc.ServerOptions;
  /** Interface to bind; also the address advertised unless `advertise` is given. */
  host: string;
  /** Port to bind; 0 picks a free one (the registered key names the real port). */
  port: number;
  /**
   * The address clients dial, registered and named in logs, when it is not
   * the bind address (0.0.0.0 in a container, a NAT, a pod IP). Without a
   * port the bound port is advertised.
   */
  advertise?: { host: string; port?: number };
  /** Default insecure. */
  credentials?: grpc.ServerCredentials;
  /** etcd client to register with; omit to serve without registering. */
  etcd?: Etcd3;
  /** Naming prefix, default `services`. */
  prefix?: string;
  /** The registry's service name (the key is `<prefix>/<service>/<host:port>`). */
  service: string;
  /** Lease TTL, seconds (default 10). */
  ttlSeconds?: number;
  /** Record Metadata (weight, zone, version...); `pid` and `startedAt` are added. */
  metadata?: Record<string, unknown>;
  /**
   * Fully-qualified gRPC services served (e.g. `helloworld.Greeter`), each
   * reported by the health service beside "" (the server as a whole). The
   * services of `protos` and of `addService` are named without listing them.
   */
  services?: string[];
  /** proto-loader package definitions of the services served: named in the health service, and described by `reflection`. */
  protos?: PackageDefinition;
  /** Serve gRPC server reflection (`@grpc/reflection`, v1 and v1alpha) over `protos` and the health service. Default false. */
  reflection?: boolean;
  /**
   * After revoking, how long to keep answering new calls at most while
   * clients drop us, ms (default 2000). On a server built here the drain
   * moves on once no call has arrived for `quietMs` (default 200).
   */
  drainGraceMs?: number;
  quietMs?: number;
  /** Upper bound on waiting for in-flight calls after that, ms (default 5000). */
  drainTimeoutMs?: number;
}

/** How `drainOnSignals` ends a process. */
export interface SignalOptions {
  /** Exit 0 once drained (default true), as `mesh server` does; a second signal exits 130 at once either way. */
  exit?: boolean;
  /** Called once drained, before exiting (close your etcd client here). */
  onDrained?: () => void | Promise<void>;
}
