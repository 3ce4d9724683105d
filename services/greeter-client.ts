import * as grpc from '@grpc/grpc-js';
import { greeterPackage, GREETER_SERVICE, type GreeterClient } from './greeter-proto';
import { meshClientOptions, type MeshChannelConfig } from '../balancer/channel';
import type { Etcd3 } from 'etcd3';
import { ETCD_CLIENT_OPTION, registerEtcdResolver, unregisterEtcdClient } from '../balancer/resolver-etcd';

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

/** A Greeter client whose `etcd:` target resolves through a given etcd client. */
export interface GreeterOnEtcd {
  greeter: GreeterClient;
  /** Close the channel and forget the resolver's client (the caller still owns and closes `etcd`). Idempotent. */
  close(): void;
}

/**
 * A Greeter client on `target` whose etcd resolver reads through `etcd`
 * (registered under `name`; a name other than "default" is carried in the
 * channel options, so two clients in one process never share a resolver
 * client by accident). Without `etcd` the target is dialled as it is.
 */
export function openGreeterClient(
  target: string,
  etcd: Etcd3 | undefined,
  opts: { name?: string; credentials?: grpc.ChannelCredentials; options?: grpc.ChannelOptions; config?: Partial<MeshChannelConfig> } = {},
): GreeterOnEtcd {
  const name = opts.name ?? 'default';
  if (etcd) registerEtcdResolver(etcd, name);
  const greeter = createGreeterClient(target, opts.credentials, opts.config ?? {}, { ...(name === 'default' ? {} : { [ETCD_CLIENT_OPTION]: name }), ...opts.options });
  let closed = false;
  return {
    greeter,
    close() {
      if (closed) return;
      closed = true;
      greeter.close();
      if (etcd && name !== 'default') unregisterEtcdClient(name);
    },
  };
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
