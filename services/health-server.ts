import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import type { Logger } from '../core/logger';

/** The health service's own name, as clients and `mesh health` ask for it. */
export const HEALTH_SERVICE = 'grpc.health.v1.Health';

/** A Watch call as grpc-js hands it to the handler: a writable stream that also takes an error status. */
type WatchCall = grpc.ServerWritableStream<{ service: string }, { status: string }>;

/**
 * The server side of `grpc.health.v1.Health` for one grpc-js Server:
 * grpc-health-check's HealthImplementation (Check answers NOT_FOUND for a
 * service it has never been told of; Watch sends SERVICE_UNKNOWN for one and
 * stays open, then every change; List), driven by one switch.
 *
 * Two things the implementation lacks are added here:
 * - One switch for the whole server: `apply(serving)` sets "" (the server as
 *   a whole, what mesh clients watch by default) and every named service
 *   together, so a drain or a dependency going down reaches every client
 *   whichever name it asks for. The state itself is not kept here: the
 *   owner (MeshServer) has the one state cell and calls `apply` from it.
 * - Open Watch calls are tracked, so a drain can end them: a Watch never
 *   ends by itself, and grpc-js's tryShutdown waits for every open call, so
 *   a client that does not cancel its Watch on GOAWAY (grpc-js keeps streams
 *   open through one) would hold the drain until its force timeout.
 */
export class HealthServer {
  private readonly impl = new HealthImplementation({ '': 'NOT_SERVING' });
  private readonly services = new Set<string>(['']);
  private readonly watches = new Set<WatchCall>();
  private status: ServingStatus = 'NOT_SERVING';
  private ended = false;

  constructor(private readonly log: Logger) {}

  /** Add the service to `server` (once; before the server starts). */
  addTo(server: grpc.Server): void {
    this.impl.addToServer({
      addService: (def, handlers) => {
        const watch = handlers.watch as (call: WatchCall) => void;
        server.addService(def as grpc.ServiceDefinition, {
          ...(handlers as grpc.UntypedServiceImplementation),
          watch: (call: WatchCall) => {
            if (this.ended) {
              // The drain already ended the others: a late one is told at once, not left open.
              call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'server is shutting down' });
              return;
            }
            this.watches.add(call);
            const forget = () => this.watches.delete(call);
            call.on('cancelled', forget);
            call.on('finish', forget);
            watch(call);
          },
        });
      },
    });
  }

  /** Name a service in the health service; it takes the server's current status. */
  addService(name: string): void {
    if (this.services.has(name)) return;
    this.services.add(name);
    this.impl.setStatus(name, this.status);
  }

  /** The services named (`""` first). */
  get serviceNames(): string[] {
    return [...this.services];
  }

  /** Report SERVING or NOT_SERVING for "" and every named service; every open Watch is told at once. */
  apply(serving: boolean): void {
    const next: ServingStatus = serving ? 'SERVING' : 'NOT_SERVING';
    // After endWatches the implementation would write to the ended streams it still lists.
    if (next === this.status || this.ended) return;
    this.status = next;
    for (const s of this.services) this.impl.setStatus(s, next);
  }

  /** Calls watching now. */
  get openWatches(): number {
    return this.watches.size;
  }

  /**
   * End every open Watch with UNAVAILABLE (and any later one at once), the
   * last step of a drain before the server shuts down. Idempotent; returns
   * how many were ended.
   */
  endWatches(): number {
    this.ended = true;
    const n = this.watches.size;
    for (const call of [...this.watches]) call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'server is shutting down' });
    this.watches.clear();
    if (n > 0) this.log.info({ event: 'health.watches_ended', count: n }, `ended ${n} open health Watch call(s) for shutdown`);
    return n;
  }
}
