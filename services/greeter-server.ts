import * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { greeterPackage, type HelloReply, type HelloRequest } from './greeter-proto';
import { LeaseRegistration } from '../balancer/registration-lease';
import type { Registration } from '../balancer/registration';
import { MESH_SERVER_OPTIONS } from '../balancer/channel';
import { StateCell } from '../core/state-cell';
import { componentLogger, type Logger } from '../core/logger';
import { IndexJob } from '../demo/index-job';
import type { MeshMetrics } from './metrics-registry';

/**
 * STARTING: binding and registering. SERVING: registered (or --no-register)
 * and answering. DRAINING: lease revoked, answering until clients have moved
 * away and in-flight calls are done. STOPPED: final.
 */
export type GreeterServerState = 'STARTING' | 'SERVING' | 'DRAINING' | 'STOPPED';

export interface GreeterServerOptions {
  /** Interface to bind; also the address advertised unless `advertise` is given. */
  host: string;
  /**
   * The address clients dial, registered and named in replies, when it is
   * not the bind address (0.0.0.0 in a container, a NAT, a Kubernetes pod
   * IP). Without a port the bound port is advertised.
   */
  advertise?: { host: string; port?: number };
  /** Port to bind; 0 picks a free one (the registered key names the real port). */
  port: number;
  /** etcd client for registration; omit for --no-register. */
  etcd?: Etcd3;
  prefix: string;
  service: string;
  ttlSeconds: number;
  /** Record metadata (weight, zone, version...). */
  metadata?: Record<string, unknown>;
  credentials?: grpc.ServerCredentials;
  /**
   * After revoking, how long to keep answering new calls at most while
   * clients drop us from their endpoint sets, ms (default 2000). Draining
   * ends sooner once no new call has arrived for `quietMs` (default 200).
   */
  drainGraceMs?: number;
  quietMs?: number;
  /** Upper bound on waiting for in-flight calls after that, ms (default 5000). */
  drainTimeoutMs?: number;
  /** Campaign in this election and share the index job (see index-job.ts). */
  elect?: string;
  /** Count calls in go-grpc-prometheus's server metrics. */
  metrics?: MeshMetrics;
  /** `host:port` of this process's /metrics, written into the registry Metadata as `metrics`. */
  metricsAddr?: string;
}

/**
 * A Greeter backend that registers itself and leaves cleanly:
 * SIGTERM → revoke the lease (the key is gone in a few ms) → keep answering
 * while clients move away → finish in-flight calls → stop.
 */
export class GreeterServer {
  private readonly server: grpc.Server;
  private readonly cell: StateCell<GreeterServerState>;
  private readonly log: Logger;
  private registration: Registration | undefined;
  private boundPort = 0;
  private served = 0;
  private lastCallAt = 0;
  private stopping: Promise<void> | undefined;
  private indexJob: IndexJob | undefined;

  constructor(private readonly opts: GreeterServerOptions) {
    this.log = componentLogger('greeter-server');
    this.cell = new StateCell<GreeterServerState>('STARTING', this.log, 'server');
    this.server = new grpc.Server(MESH_SERVER_OPTIONS);
    const service = greeterPackage().Greeter.service;
    const sayHello = opts.metrics ? opts.metrics.unaryServerHandler(service.SayHello.path, this.sayHello) : this.sayHello;
    this.server.addService(service, { SayHello: sayHello });
  }

  get state(): GreeterServerState {
    return this.cell.value;
  }

  /** `host:port` as clients dial it: the advertised address, else the bound one (valid after start()). */
  get addr(): string {
    const h = this.opts.advertise?.host ?? this.opts.host;
    return `${h.includes(':') ? `[${h}]` : h}:${this.opts.advertise?.port ?? this.boundPort}`;
  }

  /** `host:port` actually bound (valid after start()). */
  get boundAddr(): string {
    return `${this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host}:${this.boundPort}`;
  }

  get servedCount(): number {
    return this.served;
  }

  get registrationKey(): string | undefined {
    return this.registration?.key;
  }

  private readonly sayHello = (call: grpc.ServerUnaryCall<HelloRequest, HelloReply>, cb: grpc.sendUnaryData<HelloReply>): void => {
    if (this.served++ === 0) this.log.info({ event: 'server.first_call', addr: this.addr }, 'first call served');
    this.lastCallAt = Date.now();
    const name = call.request.name || 'world';
    cb(null, { message: `Hello ${name} from ${this.addr}` });
  };

  /** Bind, then register; resolves when serving and (unless --no-register) registered. */
  async start(): Promise<void> {
    const bindHost = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host;
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`${bindHost}:${this.opts.port}`, this.opts.credentials ?? grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(new Error(`cannot listen on ${bindHost}:${this.opts.port}: ${err.message}`)) : resolve(port),
      ),
    );
    this.log.info({ event: 'server.listening', addr: this.addr, bound: this.boundAddr }, this.addr === this.boundAddr ? `listening on ${this.addr}` : `listening on ${this.boundAddr}, advertised as ${this.addr}`);
    // A signal during start-up: shutdown() owns the teardown from here on.
    if (this.stopping) return;
    if (this.opts.etcd) {
      this.registration = new LeaseRegistration(this.opts.etcd, {
        prefix: this.opts.prefix,
        service: this.opts.service,
        addr: this.addr,
        ttlSeconds: this.opts.ttlSeconds,
        metadata: { ...this.opts.metadata, pid: process.pid, startedAt: new Date().toISOString(), ...(this.opts.metricsAddr ? { metrics: this.opts.metricsAddr } : {}) },
      });
      try {
        await this.registration.start();
      } catch (err) {
        if (this.stopping) return; // closed by shutdown() before it completed
        throw err;
      }
      if (this.stopping) return;
      if (this.opts.elect) {
        this.indexJob = new IndexJob(this.opts.etcd, { name: this.opts.elect, addr: this.addr, ttlSeconds: this.opts.ttlSeconds });
        this.indexJob.start();
      }
    }
    this.cell.set('SERVING', this.opts.etcd ? 'registered' : 'serving without registration (--no-register)', { addr: this.addr });
  }

  /** Leave the mesh and stop. Idempotent; resolves when stopped. */
  shutdown(reason: string): Promise<void> {
    if (!this.stopping) this.stopping = this.doShutdown(reason);
    return this.stopping;
  }

  private async doShutdown(reason: string): Promise<void> {
    this.cell.set('DRAINING', reason);
    const t0 = Date.now();
    // start() may still be binding or registering: it checks `stopping` after
    // each step, so what it has created by now is all there is to close.
    // Leave the registry and the election together: clients and the next leader move at once.
    await Promise.all([this.registration?.close(), this.indexJob?.close()]);
    const revokedMs = Date.now() - t0;
    // Clients drop us as soon as their watch delivers the delete; until then
    // they may still pick us, so keep answering until traffic goes quiet.
    const grace = this.opts.drainGraceMs ?? 2_000;
    const quiet = this.opts.quietMs ?? 200;
    if (this.registration) {
      while (Date.now() - t0 < grace && Date.now() - Math.max(this.lastCallAt, t0) < quiet) {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
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
