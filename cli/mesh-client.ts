import type { Etcd3 } from 'etcd3';
import { connectEtcd, type EtcdFlags, type ServiceFlags } from './common';
import { clientCredentials, type ClientTlsFlags } from './tls';
import { meshTarget, openGreeterClient, type GreeterClient } from '../services/greeter-client';
import { servicePrefix } from '../balancer/endpoint-codec';
import type { LbPolicy } from '../balancer/channel';

/** Flags of a command that calls the greeters (`client`, `load`). */
export interface MeshClientFlags extends EtcdFlags, ServiceFlags, ClientTlsFlags {
  /** Any grpc-js target instead of the etcd resolver; then no etcd client is opened. */
  target?: string;
  /** Load-balancing policy (`--lb`); default the mesh's. */
  lb?: LbPolicy;
}

/** A Greeter client on the mesh channel, and the etcd client its resolver reads (none with --target). */
export interface MeshClient {
  target: string;
  greeter: GreeterClient;
  etcd: Etcd3 | undefined;
  /** The registry prefix the resolver watches (`<prefix>/<service>/`), undefined with --target. */
  registry: string | undefined;
  /** Close the channel, then the etcd client. Idempotent. */
  close(): void;
}

/**
 * Open the client the flags describe. Usage errors come first (bad
 * certificate files: UsageError, exit 2), then etcd must answer: the probe
 * reads the service's prefix, which is all a client's role needs
 * (CommandFailure naming why not). The etcd client becomes the resolver's
 * (services/greeter-client.ts openGreeterClient, which the demo uses too).
 */
export async function openMeshClient(flags: MeshClientFlags): Promise<MeshClient> {
  const target = flags.target ?? meshTarget(flags.prefix, flags.service);
  const tls = clientCredentials(flags, target);
  const registry = flags.target ? undefined : servicePrefix(flags.prefix, flags.service);
  const etcd = registry ? await connectEtcd(flags, undefined, { readPrefix: registry }) : undefined;
  const channel = openGreeterClient(target, etcd, { credentials: tls.credentials, options: tls.options, config: { lb: flags.lb } });
  let closed = false;
  return {
    target,
    greeter: channel.greeter,
    etcd,
    registry,
    close() {
      if (closed) return;
      closed = true;
      channel.close();
      etcd?.close();
    },
  };
}
