import { readFileSync } from 'node:fs';
import { Etcd3, IOptions, isRecoverableError } from 'etcd3';
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, retry } from 'cockatiel';

/**
 * How to reach etcd: the same knobs etcdctl has. One builder for every part
 * of the mesh (registration, resolver, coordination, CLI) so that deadlines,
 * reconnect backoff and credentials behave the same everywhere.
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

/** Default `--etcd` when neither the flag nor ETCD_ENDPOINTS is given and no embedded etcd is started. */
export const DEFAULT_ETCD_ENDPOINT = '127.0.0.1:2379';

/**
 * Build an etcd3 client tuned for a mesh that must keep working while members
 * die:
 * - every unary call has a deadline, so a hung member costs one deadline, not
 *   a hang, and the call moves to another member;
 * - a member's circuit opens after 3 consecutive failures but half-opens after
 *   1 s (etcd3's default is 5 s, which would delay re-registration after an
 *   outage by up to 5 s);
 * - watch streams reconnect with a backoff capped at 1 s (etcd3's default caps
 *   at 30 s, far too long for a resolver);
 * - gRPC keepalive on the etcd channels (10 s; etcd refuses pings more often
 *   than every 5 s by default) notices a dead TCP peer behind an idle stream.
 */
export function createEtcdClient(opts: EtcdConnectOptions): Etcd3 {
  if (opts.endpoints.length === 0) throw new Error('no etcd endpoint given');
  const timeout = opts.requestTimeoutMs ?? 3000;
  const secure = opts.endpoints.some((e) => e.startsWith('https://')) || Boolean(opts.cacert || opts.cert || opts.key);
  const hosts = secure ? opts.endpoints.map((e) => (e.startsWith('https://') ? e : `https://${e.replace(/^http:\/\//, '')}`)) : opts.endpoints;
  const options: IOptions = {
    hosts,
    dialTimeout: timeout,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    grpcOptions: {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
    },
    faultHandling: {
      host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1_000, breaker: new ConsecutiveBreaker(3) }),
      global: retry(handleWhen(isRecoverableError), { maxAttempts: 3 }),
      // etcd3 types this as an IBackoff, but its WatchManager calls `.next()`
      // on it first, exactly as on its own default, a factory.
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1_000 }) as unknown as NonNullable<IOptions['faultHandling']>['watchBackoff'],
    },
  };
  if (secure) {
    options.credentials = {
      // etcd3's type says Buffer, but grpc-js createSsl takes null for "system roots".
      rootCertificate: opts.cacert ? readFileSync(opts.cacert) : (null as unknown as Buffer),
      privateKey: opts.key ? readFileSync(opts.key) : undefined,
      certChain: opts.cert ? readFileSync(opts.cert) : undefined,
    };
  }
  if (opts.user !== undefined) {
    const i = opts.user.indexOf(':');
    const username = i >= 0 ? opts.user.slice(0, i) : opts.user;
    const password = i >= 0 ? opts.user.slice(i + 1) : (opts.password ?? '');
    options.auth = { username, password, callOptions: () => ({ deadline: Date.now() + timeout }) };
  }
  return new Etcd3(options);
}
