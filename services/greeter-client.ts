import * as grpc from '@grpc/grpc-js';
import { greeterPackage, GREETER_SERVICE, type GreeterClient } from './greeter-proto';
import { meshClientOptions, type MeshChannelConfig } from '../balancer/channel';
import { registerEtcdResolver } from '../balancer/resolver-etcd';

export type { GreeterClient };

/** The grpc-js target of a service through the etcd resolver: `etcd:///<prefix>/<service>`. */
export function meshTarget(prefix: string, service: string): string {
  return `etcd:///${prefix}/${service}`;
}

/**
 * A Greeter client on the mesh channel (round_robin + hedging + keepalive).
 * `target` is any grpc-js target: `etcd:///services/greeter`, or a static
 * `ipv4:127.0.0.1:50051,127.0.0.1:50052` for side-by-side comparisons, and
 * gets exactly the same channel options either way.
 */
export function createGreeterClient(target: string, credentials?: grpc.ChannelCredentials, config: Partial<MeshChannelConfig> = {}, extra: grpc.ChannelOptions = {}): GreeterClient {
  registerEtcdResolver();
  const { Greeter } = greeterPackage();
  const cfg = { idempotentServices: [GREETER_SERVICE], ...config };
  return new Greeter(target, credentials ?? grpc.credentials.createInsecure(), { ...meshClientOptions(cfg), ...extra });
}

/** One SayHello with a deadline covering every attempt. */
export function sayHello(client: GreeterClient, name: string, deadlineMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    client.sayHello({ name }, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res!.message)));
  });
}

/** The backend `host:port` named in a reply `Hello <name> from <host:port>`. */
export function backendOf(reply: string): string {
  const i = reply.lastIndexOf(' from ');
  return i >= 0 ? reply.slice(i + 6) : 'unknown';
}
