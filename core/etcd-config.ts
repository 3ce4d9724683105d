import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';

/**
 * How to reach etcd, as a caller says it: the same knobs etcdctl has.
 * `etcdConfig()` turns it into an EtcdConfig, once; client creation, the
 * start-up diagnosis and the resolver all take that.
 */
export interface EtcdConnectOptions {
  /** `host:port`, `http://host:port` or `https://host:port`; at least one. */
  endpoints: string[];
  /** PEM CA bundle to verify etcd's server certificate (etcdctl --cacert). */
  cacert?: string;
  /** PEM client certificate (etcdctl --cert). */
  cert?: string;
  /** PEM client key (etcdctl --key). */
  key?: string;
  /** etcd user name (etcdctl --user name[:password]). */
  user?: string;
  /** etcd password, when not given inside `user`. */
  password?: string;
  /**
   * Deadline of every unary etcd call, ms (default 3000). Without one a call
   * sent to a frozen member (SIGSTOP, TCP still open) would wait forever; with
   * one, etcd3 retries it on another member.
   */
  requestTimeoutMs?: number;
}

/** One etcd endpoint, parsed. */
export interface EtcdEndpoint {
  /** As given (`host:port` or a URL): for messages. */
  readonly text: string;
  /** What etcd3 dials: `http://` or `https://` host:port. */
  readonly url: string;
  /** Host without brackets (IPv6) and port. */
  readonly host: string;
  readonly port: number;
  /** `host:port` as written (IPv6 bracketed). */
  readonly hostPort: string;
}

/**
 * EtcdConnectOptions parsed and checked once: endpoints split into parts,
 * TLS decided (any https:// endpoint or any certificate flag means TLS for
 * all, as etcdctl does), certificate files read and verified as PEM, user and
 * password split. Immutable; holds no connection.
 */
export interface EtcdConfig {
  readonly kind: 'etcd-config';
  readonly endpoints: readonly EtcdEndpoint[];
  readonly secure: boolean;
  readonly tls: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  readonly auth?: { readonly username: string; readonly password: string };
  readonly requestTimeoutMs: number;
  /** What it was parsed from, for messages that name a flag's file (never printed whole: it holds the password). */
  readonly source: Readonly<EtcdConnectOptions>;
}

/** Default `--etcd` when neither the flag nor ETCD_ENDPOINTS is given and no embedded etcd is started. */
export const DEFAULT_ETCD_ENDPOINT = '127.0.0.1:2379';

/**
 * Parse and check `opts` (an EtcdConfig is returned as it is). Throws Error
 * with one line naming the flag at fault: no endpoint, a TLS file that is
 * missing or not PEM, --cert without --key.
 */
export function etcdConfig(opts: EtcdConnectOptions | EtcdConfig): EtcdConfig {
  if (isEtcdConfig(opts)) return opts;
  if (opts.endpoints.length === 0) throw new Error('no etcd endpoint given');
  const secure = opts.endpoints.some((e) => e.startsWith('https://')) || Boolean(opts.cacert || opts.cert || opts.key);
  const endpoints = opts.endpoints.map((text) => {
    const hostPort = text.replace(/^[a-z]+:\/\//, '');
    const i = hostPort.lastIndexOf(':');
    const host = (i >= 0 ? hostPort.slice(0, i) : hostPort).replace(/^\[|\]$/g, '');
    return { text, hostPort, host, port: Number(i >= 0 ? hostPort.slice(i + 1) : 2379), url: `${secure ? 'https' : 'http'}://${hostPort}` };
  });
  const auth = opts.user !== undefined ? splitUser(opts.user, opts.password) : undefined;
  return {
    kind: 'etcd-config',
    endpoints,
    secure,
    tls: secure ? readEtcdTlsFiles(opts) : {},
    auth,
    requestTimeoutMs: opts.requestTimeoutMs ?? 3000,
    source: { ...opts },
  };
}

export function isEtcdConfig(x: unknown): x is EtcdConfig {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'etcd-config';
}

/** Endpoints from the environment, as etcdctl and the CLI read them: ETCD_ENDPOINTS, else ETCDCTL_ENDPOINTS; undefined when neither is set. */
export function endpointsFromEnv(): { name: string; value: string } | undefined {
  for (const name of ['ETCD_ENDPOINTS', 'ETCDCTL_ENDPOINTS']) {
    const value = process.env[name];
    if (value) return { name, value };
  }
  return undefined;
}

/** `name:password` or `name` (+ separate password), as etcdctl --user / --password. */
export function splitUser(user: string, password?: string): { username: string; password: string } {
  const i = user.indexOf(':');
  return i >= 0 ? { username: user.slice(0, i), password: user.slice(i + 1) } : { username: user, password: password ?? '' };
}

/**
 * Read and check etcd's TLS files up front, so a wrong path or a file that is
 * not PEM is one clear error naming the file (etcdctl's flag names), not a
 * failed handshake later. Throws Error.
 */
function readEtcdTlsFiles(opts: Pick<EtcdConnectOptions, 'cacert' | 'cert' | 'key'>): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  if (Boolean(opts.cert) !== Boolean(opts.key)) throw new Error('--cert and --key go together: give both or neither');
  const ca = opts.cacert ? readPem(opts.cacert, '--cacert') : undefined;
  const cert = opts.cert ? readPem(opts.cert, '--cert') : undefined;
  const key = opts.key ? readPem(opts.key, '--key') : undefined;
  try {
    if (ca) createSecureContext({ ca });
  } catch (err) {
    throw new Error(`--cacert ${opts.cacert} is not a PEM CA certificate: ${(err as Error).message}`);
  }
  try {
    if (cert && key) createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(`--cert ${opts.cert} / --key ${opts.key} are not a matching PEM certificate and key: ${(err as Error).message}`);
  }
  return { ca, cert, key };
}

/** Read a PEM file given by `flag`; the error names the flag and the file. */
export function readPem(file: string, flag: string): Buffer {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`cannot read ${flag} ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message}`);
  }
  if (!buf.includes('-----BEGIN ')) throw new Error(`${flag} ${file} is not a PEM file (no -----BEGIN line)`);
  return buf;
}
