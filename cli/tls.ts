import { createSecureContext } from 'node:tls';
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Command, Option } from 'commander';
import { silenceIpServernameWarning } from '../core/etcd-client';
import { readPem } from '../core/etcd-config';
import { parseFileArg, parseServerName } from './parse';
import { UsageError, errorText } from './common';

/**
 * gRPC TLS between clients and greeters (not etcd's TLS: see --cacert/--cert/--key).
 *
 * Name verification: a channel on `etcd:///<prefix>/<service>` verifies the
 * greeters' certificates against the resolver's authority, the service name
 * (e.g. `greeter`), so greeter certificates carry the service name as a DNS
 * SAN; `--tls-server-name` verifies another name instead. A static
 * `--target ipv4:...` verifies the address itself.
 */
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
    .addOption(new Option('--tls-cert <file>', 'serve gRPC over TLS with this certificate (PEM; carry the service name as a DNS SAN)').argParser(parseFileArg))
    .addOption(new Option('--tls-key <file>', 'private key of --tls-cert (PEM)').argParser(parseFileArg))
    .addOption(new Option('--tls-ca <file>', 'require client certificates signed by this CA (mutual TLS)').argParser(parseFileArg));
}

export function addClientTlsOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--tls-ca <file>', 'call greeters over TLS, verifying them with this CA (PEM)').argParser(parseFileArg))
    .addOption(new Option('--tls-cert <file>', 'client certificate for mutual TLS (PEM)').argParser(parseFileArg))
    .addOption(new Option('--tls-key <file>', 'private key of --tls-cert (PEM)').argParser(parseFileArg))
    .addOption(new Option('--tls-server-name <name>', 'name the greeters\' certificates must carry (default: the service name)').argParser(parseServerName));
}

/** Read and check the PEM files: a bad one is a usage error naming the flag. */
function checked(files: { ca?: string; cert?: string; key?: string }): { ca: Buffer | null; cert: Buffer | null; key: Buffer | null } {
  let ca: Buffer | null = null;
  let cert: Buffer | null = null;
  let key: Buffer | null = null;
  try {
    ca = files.ca ? readPem(files.ca, '--tls-ca') : null;
    cert = files.cert ? readPem(files.cert, '--tls-cert') : null;
    key = files.key ? readPem(files.key, '--tls-key') : null;
  } catch (err) {
    throw new UsageError(errorText(err));
  }
  try {
    if (ca) createSecureContext({ ca });
  } catch (err) {
    throw new UsageError(`--tls-ca ${files.ca} is not a PEM CA certificate: ${errorText(err)}`);
  }
  try {
    if (cert && key) createSecureContext({ cert, key });
  } catch (err) {
    throw new UsageError(`--tls-cert ${files.cert} / --tls-key ${files.key} are not a matching PEM certificate and key: ${errorText(err)}`);
  }
  return { ca, cert, key };
}

/** Server credentials, or undefined for plain text. Throws UsageError. */
export function serverCredentials(f: ServerTlsFlags): grpc.ServerCredentials | undefined {
  if (!f.tlsCert && !f.tlsKey && !f.tlsCa) return undefined;
  if (!f.tlsCert || !f.tlsKey) throw new UsageError(f.tlsCa && !f.tlsCert && !f.tlsKey ? '--tls-ca needs --tls-cert and --tls-key (the server\'s own certificate)' : '--tls-cert and --tls-key go together');
  const pem = checked({ ca: f.tlsCa, cert: f.tlsCert, key: f.tlsKey });
  return grpc.ServerCredentials.createSsl(pem.ca, [{ cert_chain: pem.cert!, private_key: pem.key! }], Boolean(pem.ca));
}

/**
 * Channel credentials and, for TLS, the options that set the name to verify
 * (grpc.ssl_target_name_override). Throws UsageError.
 */
export function clientCredentials(f: ClientTlsFlags, target?: string): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  if (!f.tlsCa && !f.tlsCert && !f.tlsKey) {
    if (f.tlsServerName) throw new UsageError('--tls-server-name needs --tls-ca (it names the certificate to verify)');
    return { credentials: grpc.credentials.createInsecure(), options: {} };
  }
  if (Boolean(f.tlsCert) !== Boolean(f.tlsKey)) throw new UsageError('--tls-cert and --tls-key go together');
  const pem = checked({ ca: f.tlsCa, cert: f.tlsCert, key: f.tlsKey });
  const credentials = grpc.credentials.createSsl(pem.ca, pem.key, pem.cert);
  // A static target by IP address: grpc-js sends it as SNI and Node warns (DEP0123).
  if (target && /(^|[:,/])\d+\.\d+\.\d+\.\d+:\d+|^ipv6:/.test(target)) silenceIpServernameWarning();
  if (f.tlsServerName && isIP(f.tlsServerName)) silenceIpServernameWarning();
  return { credentials, options: f.tlsServerName ? { 'grpc.ssl_target_name_override': f.tlsServerName, 'grpc.default_authority': f.tlsServerName } : {} };
}
