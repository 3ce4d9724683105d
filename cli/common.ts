import { Command, Option } from 'commander';
import { errorText } from '../core/etcd-errors';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { isBrokenCircuitError } from 'cockatiel';
import type { Etcd3 } from 'etcd3';
// The errors alone: 'etcd3' itself parses its protos on import (0.27 s of every CLI start); see createEtcdClient.
import { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, EtcdUserNotFoundError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3/lib/errors';
import { createEtcdClient } from '../core/etcd-client';
import { DEFAULT_ETCD_ENDPOINT, endpointsFromEnv, etcdConfig, splitUser, type EtcdConfig, type EtcdEndpoint } from '../core/etcd-config';
import { parseEndpoints, parseFileArg, parsePrefix, parsePositiveDuration, parseServiceName } from './parse';

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
    .addOption(new Option('--etcd <endpoints>', 'etcd endpoints, host:port[,host:port...] or http(s)://host:port (env ETCD_ENDPOINTS, else ETCDCTL_ENDPOINTS)').argParser(parseEndpoints))
    .addOption(new Option('--cacert <file>', 'verify etcd\'s certificate with this CA bundle (PEM); implies TLS').env('ETCDCTL_CACERT').argParser(parseFileArg))
    .addOption(new Option('--cert <file>', 'client certificate for etcd (PEM), with --key').env('ETCDCTL_CERT').argParser(parseFileArg))
    .addOption(new Option('--key <file>', 'private key of --cert (PEM)').env('ETCDCTL_KEY').argParser(parseFileArg))
    .addOption(new Option('--user <name[:password]>', 'etcd user, as etcdctl --user').env('ETCDCTL_USER'))
    .addOption(new Option('--password <password>', 'etcd password, if not in --user').env('ETCDCTL_PASSWORD'))
    .addOption(new Option('--dial-timeout <duration>', 'how long to wait for etcd to answer at start-up').env('ETCDCTL_DIAL_TIMEOUT').default(5000, '5s').argParser(parsePositiveDuration));
}

export function addServiceOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--prefix <prefix>', 'registry key prefix').default('services').argParser(parsePrefix))
    .addOption(new Option('--service <name>', 'service name').default('greeter').argParser(parseServiceName));
}

/** The endpoints to use: --etcd, else ETCD_ENDPOINTS, else ETCDCTL_ENDPOINTS (empty means unset), else undefined. */
export function configuredEndpoints(flags: EtcdFlags): string[] | undefined {
  if (flags.etcd) return flags.etcd;
  const env = endpointsFromEnv();
  if (!env) return undefined;
  try {
    return parseEndpoints(env.value);
  } catch (err) {
    throw new UsageError(`${env.name}: ${errorText(err)}`);
  }
}

/**
 * The connection the flags describe, parsed and checked once (certificate
 * files readable and PEM, --cert with --key, a user with a password) into
 * the EtcdConfig that client creation and the start-up diagnosis both take.
 * Throws UsageError (exit 2).
 */
export function etcdConfigFromFlags(flags: EtcdFlags, endpoints?: string[]): EtcdConfig {
  let cfg: EtcdConfig;
  try {
    cfg = etcdConfig({
      endpoints: endpoints ?? configuredEndpoints(flags) ?? [DEFAULT_ETCD_ENDPOINT],
      cacert: flags.cacert,
      cert: flags.cert,
      key: flags.key,
      user: flags.user,
      password: flags.password,
    });
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(errorText(err));
  }
  if (cfg.auth) {
    const { username, password } = cfg.auth;
    if (username === '') throw new UsageError('--user needs a user name: --user NAME[:PASSWORD]');
    if (password === '') throw new UsageError(`--user ${username} has no password: use --user ${username}:PASSWORD, --password or ETCDCTL_PASSWORD`);
  } else if (flags.password !== undefined && process.env.ETCDCTL_PASSWORD !== flags.password) {
    throw new UsageError('--password needs --user NAME');
  }
  return cfg;
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

/** A bad flag value found after parsing (files, combinations): one line, exit 2. */
export class UsageError extends CommandFailure {
  constructor(message: string) {
    super(message, 2);
  }
}

const NO_ANSWER = new Error('no answer within --dial-timeout');

/** What connectEtcd proves before returning. */
export interface EtcdProbe {
  /**
   * Key prefix the command is about to read (e.g. `services/greeter/`): the
   * start-up probe reads it (count only), so a role that may not read it fails
   * here with one line. Without it the probe is etcd's Status call, which
   * needs no key permission at all but still proves the address, TLS and the
   * user's password (etcd3 authenticates before any call).
   */
  readPrefix?: string;
  /** The permission the command's role needs on readPrefix, for the error line (default `read`). */
  needs?: 'read' | 'readwrite';
}

/**
 * Connect and prove etcd answers within --dial-timeout, so a wrong address,
 * a dead cluster, a TLS mismatch, bad credentials or a role without
 * permission is one clear line (CommandFailure), not a hang. The probe needs
 * no more permission than the command itself: Status, or a count-only read
 * of `probe.readPrefix`; never a key of its own.
 */
export async function connectEtcd(flags: EtcdFlags, endpoints?: string[], probe: EtcdProbe = {}): Promise<Etcd3> {
  const cfg = etcdConfigFromFlags(flags, endpoints);
  const client = createEtcdClient(cfg);
  const deadline = Date.now() + flags.dialTimeout;
  const call = probe.readPrefix ? client.getAll().prefix(probe.readPrefix).options({ deadline }).count() : client.maintenance.status({ deadline });
  let timer: NodeJS.Timeout | undefined;
  const t0 = Date.now();
  // etcd3 authenticates first (its own deadline, per endpoint) and retries;
  // the race keeps the whole probe within --dial-timeout whatever it does.
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(NO_ANSWER), flags.dialTimeout + 100);
  });
  try {
    await Promise.race([call, timeout]);
  } catch (err) {
    client.close();
    throw new CommandFailure(await explainEtcdFailure(err, cfg, Date.now() - t0 >= flags.dialTimeout ? flags.dialTimeout : undefined, probe));
  } finally {
    clearTimeout(timer);
  }
  return client;
}

/** One line saying why etcd refused or did not answer, without the password. */
export async function explainEtcdFailure(err: unknown, cfg: EtcdConfig, timedOutAfterMs: number | undefined, probe: EtcdProbe = {}): Promise<string> {
  const where = `etcd at ${cfg.endpoints.map((e) => e.text).join(',')}`;
  const user = cfg.auth?.username;
  const text = errorText(err);
  if (err instanceof EtcdAuthenticationFailedError) return `${where} rejected user ${JSON.stringify(user)}: wrong user name or password`;
  if (err instanceof EtcdPermissionDeniedError) {
    const what = probe.readPrefix ? `read ${probe.readPrefix}` : 'do this';
    return user !== undefined
      ? `etcd user ${JSON.stringify(user)} may not ${what} (permission denied): its role needs ${probe.needs ?? 'read'} on that prefix`
      : `${where} has authentication enabled and denied ${probe.readPrefix ? `reading ${probe.readPrefix}` : 'the request'}: pass --user NAME[:PASSWORD]`;
  }
  if (err instanceof EtcdUserNotFoundError) return `${where} has authentication enabled and knows no user for this client (${text}): pass --user NAME[:PASSWORD]`;
  if (/authentication is not enabled/.test(text)) return `${where} has authentication disabled, but --user was given (${text})`;
  // etcd answered, with something else than the above: say what.
  if (!(err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError || isBrokenCircuitError(err) || err === NO_ANSWER || /UNAVAILABLE|DEADLINE|No connection/i.test(text))) {
    return `${where} refused the start-up check: ${text}`;
  }
  const causes = await Promise.all(cfg.endpoints.map((e) => diagnoseEndpoint(e, cfg)));
  const head = timedOutAfterMs !== undefined ? `${where} did not answer within ${timedOutAfterMs} ms` : `cannot reach ${where}`;
  return `${head}: ${causes.length === 1 ? causes[0] : cfg.endpoints.map((e, i) => `${e.text}: ${causes[i]}`).join('; ')}`;
}

/**
 * Why a gRPC call to one endpoint got nowhere, found with a plain TCP (and
 * TLS) connection of our own within `budgetMs`: refused, silent, TLS
 * verification, a client certificate required, TLS spoken where plain text
 * was expected.
 */
export function diagnoseEndpoint(endpoint: EtcdEndpoint, cfg: EtcdConfig, budgetMs = 1000): Promise<string> {
  const { secure, tls: files } = cfg;
  const { host, port, hostPort: hp } = endpoint;
  const opts = cfg.source;
  return new Promise((resolve) => {
    let done = false;
    const sockets: net.Socket[] = [];
    const finish = (why: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const s of sockets) s.destroy();
      resolve(why);
    };
    let connected = false;
    const timer = setTimeout(() => finish(connected ? 'the TCP connection was accepted but nothing answered (not etcd, or etcd is hung?)' : 'no answer to a TCP connection (firewall, or a wrong address?)'), budgetMs);
    const sock = net.connect({ host, port });
    sockets.push(sock);
    sock.once('error', (e: NodeJS.ErrnoException) => finish(e.code === 'ECONNREFUSED' ? 'connection refused (is etcd running on that port?)' : e.message));
    sock.once('connect', () => {
      connected = true;
      const t = tls.connect({
        socket: sock,
        host,
        servername: net.isIP(host) ? undefined : host,
        ca: files.ca,
        cert: files.cert,
        key: files.key,
        ALPNProtocols: ['h2'],
        rejectUnauthorized: secure,
      });
      sockets.push(t);
      t.once('error', (e: NodeJS.ErrnoException & { reason?: string }) => {
        // OpenSSL's messages are long and multi-line; its `reason` is the useful part.
        const why = e.reason ?? errorText(e);
        if (!secure) finish('plain-text gRPC got no answer, and the port does not speak TLS either');
        else if (/certificate required|alert bad certificate|alert handshake failure|alert unknown ca|alert certificate unknown/i.test(why)) {
          finish(files.cert ? `etcd does not accept the client certificate --cert ${opts.cert} (${why})` : `etcd requires a client certificate: pass --cert and --key (${why})`);
        } else if (/self.signed|unable to (get|verify)|certificate|altnames|hostname/i.test(why)) finish(`cannot verify etcd's TLS certificate${opts.cacert ? ` with --cacert ${opts.cacert}` : ' (pass --cacert)'}: ${why}`);
        else if (/wrong version number|packet length too long|unexpected eof|socket disconnected/i.test(why)) finish(`TLS handshake failed: the port does not seem to speak TLS (plain etcd? use host:port without --cacert/--cert/--key): ${why}`);
        else finish(`TLS handshake failed: ${why}`);
      });
      t.once('secureConnect', () => {
        if (!secure) {
          finish(`etcd speaks TLS on that port: use https://${hp} and --cacert`);
          return;
        }
        // TLS 1.3: a server that wants a client certificate says so just
        // after the handshake; give it a moment to.
        setTimeout(() => finish('TLS handshake succeeded, but etcd did not answer gRPC'), 300);
      });
    });
  });
}

export { errorText };
