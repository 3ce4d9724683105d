import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { Command, Option } from 'commander';

/** gRPC TLS between clients and greeters (not etcd's TLS: see --cacert/--cert/--key). */
export interface ServerTlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

export interface ClientTlsFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
}

export function addServerTlsOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--tls-cert <file>', 'serve gRPC over TLS with this certificate (PEM)'))
    .addOption(new Option('--tls-key <file>', 'private key of --tls-cert (PEM)'))
    .addOption(new Option('--tls-ca <file>', 'require client certificates signed by this CA (mutual TLS)'));
}

export function addClientTlsOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--tls-ca <file>', 'call greeters over TLS, verifying them with this CA (PEM)'))
    .addOption(new Option('--tls-cert <file>', 'client certificate for mutual TLS (PEM)'))
    .addOption(new Option('--tls-key <file>', 'private key of --tls-cert (PEM)'))
    .addOption(new Option('--tls-server-name <name>', 'name the greeters\' certificates must carry (default: the service name)'));
}

function read(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}

export function serverCredentials(f: ServerTlsFlags): grpc.ServerCredentials | undefined {
  if (!f.tlsCert && !f.tlsKey && !f.tlsCa) return undefined;
  if (!f.tlsCert || !f.tlsKey) throw new Error('--tls-cert and --tls-key go together');
  return grpc.ServerCredentials.createSsl(
    f.tlsCa ? read(f.tlsCa, '--tls-ca') : null,
    [{ cert_chain: read(f.tlsCert, '--tls-cert'), private_key: read(f.tlsKey, '--tls-key') }],
    Boolean(f.tlsCa),
  );
}

/** Channel credentials and, for TLS, the name to verify (grpc.ssl_target_name_override). */
export function clientCredentials(f: ClientTlsFlags): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  if (!f.tlsCa && !f.tlsCert && !f.tlsKey) return { credentials: grpc.credentials.createInsecure(), options: {} };
  if (Boolean(f.tlsCert) !== Boolean(f.tlsKey)) throw new Error('--tls-cert and --tls-key go together');
  const credentials = grpc.credentials.createSsl(
    f.tlsCa ? read(f.tlsCa, '--tls-ca') : null,
    f.tlsKey ? read(f.tlsKey, '--tls-key') : null,
    f.tlsCert ? read(f.tlsCert, '--tls-cert') : null,
  );
  return { credentials, options: f.tlsServerName ? { 'grpc.ssl_target_name_override': f.tlsServerName, 'grpc.default_authority': f.tlsServerName } : {} };
}
