import { Command, Option } from 'commander';
import { errorText } from '../balancer/etcd-errors';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient, DEFAULT_ETCD_ENDPOINT, type EtcdConnectOptions } from '../balancer/etcd-client';
import { parseEndpoints, parseName, parsePrefix, parsePositiveDuration } from './parse';

/**
 * Flags shared by every command that talks to etcd, named as etcdctl names
 * them, with the same environment fallbacks (ETCDCTL_*), plus ETCD_ENDPOINTS.
 */
export interface EtcdFlags {
  etcd?: string[];
  cacert?: string;
  cert?: string;
  key?: string;
  user?: string;
  password?: string;
  dialTimeout: number;
}

export interface ServiceFlags {
  prefix: string;
  service: string;
}

export function addEtcdOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--etcd <endpoints>', 'etcd endpoints, host:port[,host:port...] or http(s)://host:port (env ETCD_ENDPOINTS)').argParser(parseEndpoints))
    .addOption(new Option('--cacert <file>', 'verify etcd with this CA bundle').env('ETCDCTL_CACERT'))
    .addOption(new Option('--cert <file>', 'client certificate for etcd').env('ETCDCTL_CERT'))
    .addOption(new Option('--key <file>', 'client key for etcd').env('ETCDCTL_KEY'))
    .addOption(new Option('--user <name[:password]>', 'etcd user').env('ETCDCTL_USER'))
    .addOption(new Option('--password <password>', 'etcd password, if not in --user').env('ETCDCTL_PASSWORD'))
    .addOption(new Option('--dial-timeout <duration>', 'how long to wait for etcd to answer at start-up').default(5000, '5s').argParser(parsePositiveDuration));
}

export function addServiceOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--prefix <prefix>', 'registry key prefix').default('services').argParser(parsePrefix))
    .addOption(new Option('--service <name>', 'service name').default('greeter').argParser(parseName));
}

/** The endpoints to use: --etcd, else ETCD_ENDPOINTS / ETCDCTL_ENDPOINTS, else undefined. */
export function configuredEndpoints(flags: EtcdFlags): string[] | undefined {
  if (flags.etcd) return flags.etcd;
  const env = process.env.ETCD_ENDPOINTS ?? process.env.ETCDCTL_ENDPOINTS;
  return env ? parseEndpoints(env) : undefined;
}

export function connectOptions(flags: EtcdFlags, endpoints?: string[]): EtcdConnectOptions {
  return {
    endpoints: endpoints ?? configuredEndpoints(flags) ?? [DEFAULT_ETCD_ENDPOINT],
    cacert: flags.cacert,
    cert: flags.cert,
    key: flags.key,
    user: flags.user,
    password: flags.password,
  };
}

/** A failure to report as one line and a non-zero exit (not a usage error). */
export class CommandFailure extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/**
 * Connect and prove etcd answers within --dial-timeout, so a wrong address,
 * a dead cluster or bad credentials is one clear line, not a hang.
 */
export async function connectEtcd(flags: EtcdFlags, endpoints?: string[]): Promise<Etcd3> {
  const opts = connectOptions(flags, endpoints);
  const client = createEtcdClient(opts);
  try {
    await client.get('etcd-mesh-ping').options({ deadline: Date.now() + flags.dialTimeout }).exec();
  } catch (err) {
    client.close();
    throw new CommandFailure(`etcd at ${opts.endpoints.join(',')} did not answer within ${flags.dialTimeout} ms: ${errorText(err)}`);
  }
  return client;
}

export { errorText };
