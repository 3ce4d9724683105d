import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import { LeaseRegistration } from '../balancer/registration-lease';
import { StateCell } from '../core/state-cell';
import { componentLogger, type Logger } from '../core/logger';
import { HEALTH_SERVICE, HealthServer } from './health-server';
import { drainOnSignals } from './mesh-server-signals';
import type { MeshServerOptions, MeshServerState, SignalOptions } from './mesh-server-options';

export type { MeshServerOptions, MeshServerState, SignalOptions };

/** Calls that are the server's own machinery, not its users' traffic: never counted, never keep a drain waiting. */
const INFRASTRUCTURE = [`/${HEALTH_SERVICE}/`, '/grpc.reflection.'];

/**
 * Any grpc-js Server as a member of the mesh: bound, registered in etcd
 * under a lease kept alive (LeaseRegistration), reporting the gRPC health
 * protocol (SERVING for "" and each service served, NOT_FOUND for others;
 * NOT_SERVING while the owner says so and from the first moment of a
 * drain), optionally serving reflection, and leaving cleanly:
 * NOT_SERVING → revoke (the key is gone in a few ms) → keep answering while
 * clients move away → end open health Watches → finish in-flight calls → stop.
 * See MeshServerState for the states; `serveAndRegister` adds the signals.
 */
export class MeshServer {
  /** The grpc-js Server served: yours, or the one built here. */
  readonly server: grpc.Server;
  private readonly cell: StateCell<MeshServerState>;
  private readonly log: Logger;
  private readonly health: HealthServer;
  /** Whether calls are seen (a server built here, with our interceptor). */
  private readonly countsCalls: boolean;
  private registration: LeaseRegistration | undefined;
  /** Registration changes, one after the other: a revoke finishes before the next grant, so two leases never fight over the key. */
  private registrationOps: Promise<void> = Promise.resolve();
  private wantServing = true;
  private boundPort = 0;
  private served = 0;
  private lastCallAt = 0;
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: MeshServerOptions) {
    this.log = componentLogger('mesh-server', { service: opts.service });
    this.cell = new StateCell<MeshServerState>('STARTING', this.log, 'server');
    this.health = new HealthServer(this.log);
    // The health status is a view of the state, never set on its own.
    this.cell.on('change', (next) => this.health.apply(next === 'SERVING'));
    this.countsCalls = !opts.server;
    this.server = opts.server ?? new grpc.Server({ ...opts.serverOptions, interceptors: [...(opts.serverOptions?.interceptors ?? []), this.callCounter] });
    this.health.addTo(this.server);
    for (const s of [...(opts.services ?? []), ...servicesOf(opts.protos)]) this.health.addService(s);
    if (opts.reflection) {
      const health = protoLoader.loadSync(HEALTH_PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
      new ReflectionService({ ...health, ...opts.protos }).addToServer(this.server);
    }
  }

  get state(): MeshServerState {
    return this.cell.value;
  }

  /** Subscribe to state changes: `(next, previous, reason)`. */
  onState(listener: (next: MeshServerState, previous: MeshServerState, reason: string) => void): void {
    this.cell.on('change', listener);
  }

  /** `host:port` as clients dial it: the advertised address, else the bound one (valid after start()). */
  get addr(): string {
    const h = this.opts.advertise?.host ?? this.opts.host;
    return `${bracket(h)}:${this.opts.advertise?.port ?? this.boundPort}`;
  }

  /** `host:port` actually bound (valid after start()). */
  get boundAddr(): string {
    return `${bracket(this.opts.host)}:${this.boundPort}`;
  }

  /** The registry key (valid once registered). */
  get registrationKey(): string | undefined {
    return this.registration?.key;
  }

  /** Calls of the services served (not health, not reflection); counted on a server built here only. */
  get servedCount(): number {
    return this.served;
  }

  /** Add a service to the server and name it in the health service (before start()). */
  addService(def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    this.server.addService(def, impl);
    const name = serviceNameOf(def);
    if (name) this.health.addService(name);
  }

  private readonly callCounter: grpc.ServerInterceptor = (method, call) => {
    if (!INFRASTRUCTURE.some((p) => method.path.startsWith(p))) {
      if (this.served++ === 0) this.log.info({ event: 'server.first_call', addr: this.addr, method: method.path }, 'first call served');
      this.lastCallAt = Date.now();
    }
    return new grpc.ServerInterceptingCall(call);
  };

  /** Bind, then register; resolves when SERVING (or NOT_SERVING, if told so meanwhile). */
  async start(): Promise<void> {
    const bindHost = bracket(this.opts.host);
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${bindHost}:${this.opts.port}`, this.opts.credentials ?? grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(new Error(`cannot listen on ${bindHost}:${this.opts.port}: ${err.message}`)) : resolve(port),
      ),
    );
    this.log.info({ event: 'server.listening', addr: this.addr, bound: this.boundAddr }, this.addr === this.boundAddr ? `listening on ${this.addr}` : `listening on ${this.boundAddr}, advertised as ${this.addr}`);
    // A signal during start-up: shutdown() owns the teardown from here on.
    if (this.stopping) return;
    if (this.opts.etcd && this.wantServing) {
      const registration = this.newRegistration();
      try {
        await registration.start();
      } catch (err) {
        if (this.stopping) return; // closed by shutdown() before it completed
        throw err;
      }
      if (this.stopping) return;
    }
    if (this.wantServing) this.cell.set('SERVING', this.opts.etcd ? 'registered' : 'serving without registration', { addr: this.addr });
    else {
      this.cell.set('NOT_SERVING', 'told NOT_SERVING while starting', { addr: this.addr });
      // Told so while the key was being written: it goes again.
      if (this.registration) this.enqueueRegistration(() => this.deregister());
    }
  }

  /**
   * Declare the server able to serve or not (its dependency went down, or
   * came back). NOT_SERVING: health-checking clients stop calling at once
   * (one round trip), and the key is revoked, so every other client drops
   * it within the registry's propagation (a few ms). SERVING: health says so
   * at once and the key is written again under a new lease. Before start()
   * completes it decides where start() ends; after a drain began it is
   * refused with a warning.
   */
  setServing(serving: boolean, reason = serving ? 'told SERVING' : 'told NOT_SERVING'): void {
    if (this.cell.is('DRAINING', 'STOPPED')) {
      this.log.warn({ event: 'server.serving_ignored', serving, state: this.cell.value, reason }, `setServing(${serving}) ignored: the server is ${this.cell.value}`);
      return;
    }
    this.wantServing = serving;
    if (this.cell.is('STARTING')) return;
    this.cell.set(serving ? 'SERVING' : 'NOT_SERVING', reason);
    if (!this.opts.etcd) return;
    if (serving) this.enqueueRegistration(() => this.register());
    else this.enqueueRegistration(() => this.deregister());
  }

  private newRegistration(): LeaseRegistration {
    this.registration = new LeaseRegistration(this.opts.etcd!, {
      prefix: this.opts.prefix ?? 'services',
      service: this.opts.service,
      addr: this.addr,
      ttlSeconds: this.opts.ttlSeconds ?? 10,
      metadata: { ...this.opts.metadata, pid: process.pid, startedAt: new Date().toISOString() },
    });
    return this.registration;
  }

  private enqueueRegistration(op: () => Promise<void>): void {
    this.registrationOps = this.registrationOps.then(op).catch((err: unknown) => {
      // start() retries by itself until etcd answers; what arrives here is a refusal (permission): loud, not fatal.
      this.log.error({ event: 'server.registration_failed', err: String(err), state: this.cell.value }, `registration change failed: ${String(err)}`);
    });
  }

  private async register(): Promise<void> {
    if (!this.cell.is('SERVING') || this.registration) return;
    const registration = this.newRegistration();
    await registration.start().catch((err: unknown) => {
      if (this.registration === registration) throw err; // not closed by a later flip or a drain
    });
  }

  private async deregister(): Promise<void> {
    const registration = this.registration;
    this.registration = undefined;
    await registration?.close();
  }

  /** Leave the mesh and stop. Idempotent; resolves when stopped. */
  shutdown(reason: string): Promise<void> {
    if (!this.stopping) this.stopping = this.doShutdown(reason);
    return this.stopping;
  }

  /** Drain on SIGTERM/SIGINT as `mesh server` does (see drainOnSignals); returns what removes the handlers. */
  drainOnSignals(opts: SignalOptions = {}): () => void {
    return drainOnSignals(this, opts);
  }

  private async doShutdown(reason: string): Promise<void> {
    // First: NOT_SERVING (the cell's listener tells every health Watch), so a
    // health-checking client stops picking us before anything else happens.
    this.cell.set('DRAINING', reason);
    const t0 = Date.now();
    // start() may still be binding or registering: it checks `stopping` after
    // each step, so what it has created by now is all there is to close.
    const registered = this.registration !== undefined;
    // Close first: a grant still waiting for etcd gives up at once, so the
    // queue behind it settles (a queued re-register sees DRAINING and stops).
    await this.deregister();
    await this.registrationOps;
    const revokedMs = Date.now() - t0;
    // Clients drop us as soon as their watch (etcd's, or health's) delivers;
    // until then they may still pick us, so keep answering until traffic goes quiet.
    const grace = this.opts.drainGraceMs ?? 2_000;
    const quiet = this.countsCalls ? (this.opts.quietMs ?? 200) : Infinity;
    if (registered || this.countsCalls) {
      while (Date.now() - t0 < grace && Date.now() - Math.max(this.lastCallAt, t0) < quiet) await new Promise((r) => setTimeout(r, 20));
    }
    this.health.endWatches();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.log.warn({ event: 'server.drain_timeout' }, 'in-flight calls did not finish in time; forcing shutdown');
        this.server.forceShutdown();
        resolve();
      }, this.opts.drainTimeoutMs ?? 5_000);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    this.cell.set('STOPPED', 'drained', { revokedMs, totalMs: Date.now() - t0, served: this.served });
  }
}

/**
 * Serve `server` (services added) as a mesh member: bind, register, report
 * health, and drain on SIGTERM/SIGINT (unless `signals: false`). Resolves
 * with the MeshServer once serving; rejects (handlers removed) if it cannot.
 */
export async function serveAndRegister(server: grpc.Server, opts: Omit<MeshServerOptions, 'server' | 'serverOptions'> & { signals?: SignalOptions | false }): Promise<MeshServer> {
  const mesh = new MeshServer({ ...opts, server });
  const removeHandlers = opts.signals === false ? () => undefined : mesh.drainOnSignals(opts.signals);
  try {
    await mesh.start();
  } catch (err) {
    removeHandlers();
    await mesh.shutdown(`start failed: ${String(err)}`);
    throw err;
  }
  return mesh;
}

function bracket(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** `helloworld.Greeter` from a service definition's method paths (`/helloworld.Greeter/SayHello`). */
function serviceNameOf(def: grpc.ServiceDefinition): string | undefined {
  const first = Object.values(def)[0] as { path?: string } | undefined;
  return first?.path?.split('/')[1];
}

/** The services in proto-loader package definitions (entries whose members are methods). */
function servicesOf(pkg: protoLoader.PackageDefinition | undefined): string[] {
  if (!pkg) return [];
  return Object.entries(pkg)
    .filter(([, v]) => v !== null && typeof v === 'object' && !('format' in v) && Object.values(v).length > 0 && Object.values(v).every((m) => typeof (m as { path?: unknown }).path === 'string'))
    .map(([name]) => name);
}
