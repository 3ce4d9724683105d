/**
 * What the mesh's internals report to whoever watches them (the Prometheus
 * metrics of services/metrics-registry.ts). balancer/ calls these hooks and
 * never imports prom-client: the layering keeps balancer/ on core/ only, and
 * a process without `--metrics` installs no observer, so every hook is one
 * undefined check. Hooks must be cheap and must not throw: they run on the
 * call path (picks, call ends) and inside etcd watch callbacks.
 */
export interface MeshObserver {
  /** The load-aware picker gave a call to `backend` (host:port). */
  picked?(backend: string): void;
  /** A call started (+1) or ended (-1) on `backend`. */
  outstanding?(backend: string, delta: 1 | -1): void;
  /** The hedging interceptor sent an extra attempt: `hedge` after a delay, `retry` after UNAVAILABLE. */
  extraAttempt?(kind: 'hedge' | 'retry'): void;
  /** The retry budget refused an extra attempt. */
  budgetRefused?(): void;
  /** The resolver handed grpc-js `endpoints` addresses for `registry`. */
  resolverUpdate?(registry: string, endpoints: number): void;
  /** The registry watch of `registry` moved to `state`. */
  watchState?(registry: string, state: string): void;
  /** From the first registry event of a batch to its delivery to the channel, ms. */
  deliveryLag?(registry: string, ms: number): void;
  /** The load-aware policy ejected `backend` (`reason`: slow, failing, ...) or let it back in (`ejected` false). */
  ejection?(backend: string, ejected: boolean, reason: string): void;
  /** The client-side health check (gRPC A17) of `backend` moved to `state` (SERVING, NOT_SERVING, FAILED, UNIMPLEMENTED, ...); CLOSED when the check ends (the backend left the channel). */
  healthState?(backend: string, state: string): void;
  /** A lease registration of `key` moved to `state`; `regrant` when that state is a fresh grant after a lost lease. */
  leaseState?(key: string, state: string, regrant: boolean): void;
  /**
   * A logical client call on `path` (`/pkg.Service/Method`) started: its
   * attempts, hedges and retries are one call here. The mesh channel's
   * interceptor calls this once per call and tells the returned tally how
   * the call ended, once. Return the same object for every call of a
   * method (no allocation per call).
   */
  clientCall?(path: string, requestStream: boolean, responseStream: boolean): ClientCallTally;
}

/** How one method's client calls end (see MeshObserver.clientCall). */
export interface ClientCallTally {
  /** The call ended with status `code` after `ms` (from its start, all attempts included). */
  ended(code: number, ms: number): void;
}

let current: MeshObserver | undefined;

/** Install the process's observer (one per process; undefined removes it). */
export function setMeshObserver(observer: MeshObserver | undefined): void {
  current = observer;
}

/** The process's observer, if any. */
export function meshObserver(): MeshObserver | undefined {
  return current;
}
