import * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { greeterPackage, greeterPackageDefinition, type HelloReply, type HelloRequest } from './greeter-proto';
import { MESH_SERVER_OPTIONS } from '../balancer/channel';
import { IndexJob } from '../demo/index-job';
import { MeshServer, type MeshServerState } from './mesh-server';
import type { MeshMetrics } from './metrics-registry';

/** A GreeterServer's states are its MeshServer's (see MeshServerState). */
export type GreeterServerState = MeshServerState;

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
  /** See MeshServerOptions: the drain's grace, quiet period and in-flight timeout, ms. */
  drainGraceMs?: number;
  quietMs?: number;
  drainTimeoutMs?: number;
  /** Campaign in this election and share the index job (see index-job.ts). */
  elect?: string;
  /** Count calls in go-grpc-prometheus's server metrics. */
  metrics?: MeshMetrics;
  /** `host:port` of this process's /metrics, written into the registry Metadata as `metrics`. */
  metricsAddr?: string;
  /** Serve gRPC server reflection (default true). */
  reflection?: boolean;
}

/**
 * The mesh's example backend: `helloworld.Greeter/SayHello` answering
 * `Hello <name> from <host:port>`, on a MeshServer (registration, health,
 * reflection, the drain), plus what only the greeter does: its metrics and
 * the shared index job of `--elect`, which leaves the election together
 * with the registry so clients and the next leader move at once.
 */
export class GreeterServer {
  private readonly mesh: MeshServer;
  private indexJob: IndexJob | undefined;
  private indexJobClosed: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: GreeterServerOptions) {
    this.mesh = new MeshServer({
      serverOptions: MESH_SERVER_OPTIONS,
      host: opts.host,
      port: opts.port,
      advertise: opts.advertise,
      credentials: opts.credentials,
      etcd: opts.etcd,
      prefix: opts.prefix,
      service: opts.service,
      ttlSeconds: opts.ttlSeconds,
      metadata: { ...opts.metadata, ...(opts.metricsAddr ? { metrics: opts.metricsAddr } : {}) },
      protos: greeterPackageDefinition(),
      reflection: opts.reflection ?? true,
      drainGraceMs: opts.drainGraceMs,
      quietMs: opts.quietMs,
      drainTimeoutMs: opts.drainTimeoutMs,
    });
    const service = greeterPackage().Greeter.service;
    const sayHello = opts.metrics ? opts.metrics.unaryServerHandler(service.SayHello.path, this.sayHello) : this.sayHello;
    this.mesh.addService(service, { SayHello: sayHello });
    // The election goes with the registration, at the first moment of the drain.
    this.mesh.onState((next) => {
      if (next === 'DRAINING') void this.closeIndexJob();
    });
  }

  get state(): GreeterServerState {
    return this.mesh.state;
  }

  /** `host:port` as clients dial it: the advertised address, else the bound one (valid after start()). */
  get addr(): string {
    return this.mesh.addr;
  }

  /** `host:port` actually bound (valid after start()). */
  get boundAddr(): string {
    return this.mesh.boundAddr;
  }

  get servedCount(): number {
    return this.mesh.servedCount;
  }

  get registrationKey(): string | undefined {
    return this.mesh.registrationKey;
  }

  /** The MeshServer underneath (health: `setServing`). */
  get meshServer(): MeshServer {
    return this.mesh;
  }

  private readonly sayHello = (call: grpc.ServerUnaryCall<HelloRequest, HelloReply>, cb: grpc.sendUnaryData<HelloReply>): void => {
    const name = call.request.name || 'world';
    cb(null, { message: `Hello ${name} from ${this.addr}` });
  };

  /** Bind, then register; resolves when serving and (unless --no-register) registered. */
  async start(): Promise<void> {
    await this.mesh.start();
    if (this.opts.etcd && this.opts.elect && this.mesh.state === 'SERVING') {
      this.indexJob = new IndexJob(this.opts.etcd, { name: this.opts.elect, addr: this.addr, ttlSeconds: this.opts.ttlSeconds });
      this.indexJob.start();
    }
  }

  /** Leave the mesh (and the election) and stop. Idempotent; resolves when stopped. */
  shutdown(reason: string): Promise<void> {
    this.stopping ??= Promise.all([this.mesh.shutdown(reason), this.closeIndexJob()]).then(() => undefined);
    return this.stopping;
  }

  /** IndexJob.close() returns at once when called again; this one waits for the first close every time. */
  private closeIndexJob(): Promise<void> {
    if (!this.indexJob) return Promise.resolve();
    this.indexJobClosed ??= this.indexJob.close();
    return this.indexJobClosed;
  }
}
