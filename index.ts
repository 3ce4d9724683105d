/**
 * etcd-mesh, as a library: gRPC client-side load balancing on etcd for
 * @grpc/grpc-js, and the classic etcd coordination patterns.
 *
 * ```ts
 * import * as grpc from '@grpc/grpc-js';
 * import { createEtcdClient, registerEtcdResolver, meshClientOptions, LeaseRegistration } from 'etcd-mesh';
 * ```
 *
 * What is exported here is the public API; everything else in the package is
 * internal and may change. The CLI (`mesh`) is built on exactly this.
 */

// --- logging ---------------------------------------------------------------

/**
 * Where the library logs: by default warnings and errors only, as JSON on
 * stderr; `setMeshLogger(yourPino)` (or any object with level methods) routes
 * every component made afterwards to the host's logger.
 */
export { setMeshLogger, type LevelLogger, type SetLoggerOptions } from './core/logger';

// --- etcd itself -----------------------------------------------------------

/** Build an etcd3 client tuned for a mesh that must keep working while members die. */
export { createEtcdClient, monotonicMs } from './core/etcd-client';
/** etcdctl-style connection options, parsed and checked once. */
export { etcdConfig, DEFAULT_ETCD_ENDPOINT, type EtcdConfig, type EtcdConnectOptions, type EtcdEndpoint } from './core/etcd-config';
/** Get a key range, then watch it from revision + 1; re-list when history is compacted. */
export { ListWatch, type ListWatchEvents, type ListWatchState } from './core/list-watch';
/** Every change to a key range from a revision on, exactly once, across stream drops. */
export { ResumableWatch, prefixRange, type KeyRange, type ResumableWatchEvents } from './core/resumable-watch';
export { CompactedError } from './core/etcd-errors';

// --- load balancing --------------------------------------------------------

/** The grpc-js resolver for `etcd:///<prefix>/<service>` targets. */
export { registerEtcdResolver, unregisterEtcdClient, ETCD_SCHEME, ETCD_CLIENT_OPTION } from './balancer/resolver-etcd';
export { subsetFor, nextSubset, defaultClientId, SUBSET_SIZE_OPTION, CLIENT_ID_OPTION, HASHED_CLIENT_ID } from './balancer/subset';
/** Subsetting by membership rank (no client ids): the aperture ring, the member key space, and waiting for member keys to be revoked before closing etcd. */
export { apertureSubset } from './balancer/subset-aperture';
export { MEMBERS_ROOT, subsetMembersClosed } from './balancer/subset-members';
export { SUBSET_OVERLAP_OPTION } from './balancer/subset-plan';
/** Channel options for a mesh client: load balancing policy, hedging, retries. */
export { meshClientOptions, meshChannelOptions, meshServiceConfig, type MeshChannelConfig } from './balancer/channel';
/** A backend's lease-backed presence in the registry. */
export { LeaseRegistration } from './balancer/registration-lease';
/** Many registrations of one process under one shared lease, as Go's endpoints manager allows: far fewer etcd requests at scale. */
export { LeaseRegistrationGroup } from './balancer/registration-group';
export type { GroupMember, RegistrationGroupOptions } from './balancer/registration-group';
export type { Registration, RegistrationEvents, RegistrationOptions, RegistrationState } from './balancer/registration';
/** The registry record format, interoperable with etcd's Go `naming/endpoints`. */
export { encodeEndpoint, decodeEndpoint, endpointKey, servicePrefix, DecodeError, type EndpointRecord } from './balancer/endpoint-codec';
/** Client-side health checking (gRPC A17) as a policy over load_aware or round_robin; `meshClientOptions({ healthCheckConfig })` composes it. */
export { HEALTH_CHECK, registerHealthCheckBalancer, withHealthCheck } from './balancer/load-balancer-health-check';
/** The live endpoint set under a prefix, as the resolver sees it. */
export { EndpointWatcher, type EndpointSnapshot, type EndpointWatcherEvents, type EndpointWatcherState } from './balancer/endpoint-watcher';

// --- serving ---------------------------------------------------------------

/** Any grpc-js Server as a mesh member: registered under a lease, grpc.health.v1, optional reflection, drained on SIGTERM/SIGINT. */
export { MeshServer, serveAndRegister, type MeshServerOptions, type MeshServerState, type SignalOptions } from './services/mesh-server';
export { drainOnSignals, type Drainable } from './services/mesh-server-signals';
export { HEALTH_SERVICE } from './services/health-server';

// --- coordination patterns -------------------------------------------------

/** A lease kept alive (Go's `concurrency.Session`); monotonic time. */
export { Session, SessionLostError, type SessionEvents } from './coordination/lock-session';
/** Distributed lock, Go `concurrency.Mutex` layout (excludes `etcdctl lock`). */
export { EtcdMutex, LockHeldError, LockLostError, type LockOptions, type LockState, type AcquireOptions } from './coordination/lock';
/** Leader election, Go `concurrency.Election` layout (interoperates with `etcdctl elect`). */
export { Election, ElectionObserver, LeadershipLostError, type ElectionOptions, type ElectionState, type LeaderInfo } from './coordination/election';
/** FIFO queue: each item to exactly one consumer, acknowledged when done. */
export { EtcdQueue, QueueConsumer, ClaimLostError, type QueueItem, type Delivery, type QueueOptions, type PopOptions } from './coordination/queue';
/** Double barrier. */
export { DoubleBarrier, BarrierTimeoutError, TooManyParticipantsError, type BarrierOptions, type BarrierWaitOptions } from './coordination/barrier';
/** Pub/sub over a key prefix, gap-free across stream drops. */
export { publish, Subscription, type Message, type Published, type PublishOptions, type SubscribeOptions, type SubscriptionEvents } from './coordination/pubsub';
/** Distributed notification: a job's progress in one key. */
export { setProgress, ProgressWatch, progressKey, type ProgressUpdate, type ProgressWatchEvents } from './coordination/progress';
/** Cluster monitoring: services, endpoints, leaders, lock holders, lease TTLs. */
export { scanCluster, ClusterMonitor, type ClusterView, type MonitorOptions } from './coordination/monitor';

// --- the greeter (the mesh's example service) ------------------------------

export { GreeterServer, type GreeterServerOptions, type GreeterServerState } from './services/greeter-server';
export { createGreeterClient, sayHello, type GreeterClient } from './services/greeter-client';
/** The helloworld Greeter service definition (proto/greeter.proto), loaded with @grpc/proto-loader. */
export { GREETER_SERVICE, GREETER_PROTO, greeterPackage, type HelloRequest, type HelloReply } from './services/greeter-proto';
