import { isIP } from 'node:net';
import type { Etcd3, IOptions } from 'etcd3';
import { isRecoverableError } from 'etcd3/lib/errors';
import { ConsecutiveBreaker, ExponentialBackoff, circuitBreaker, handleWhen, retry } from 'cockatiel';
import { WatchManager } from 'etcd3/lib/watch';
import { Lease } from 'etcd3/lib/lease';
import { etcdConfig, type EtcdConfig, type EtcdConnectOptions } from './etcd-config';

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
export function createEtcdClient(opts: EtcdConnectOptions | EtcdConfig): Etcd3 {
  const cfg = etcdConfig(opts);
  const timeout = cfg.requestTimeoutMs;
  const options: IOptions = {
    hosts: cfg.endpoints.map((e) => e.url),
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
  if (cfg.secure) {
    const tls = cfg.tls;
    options.credentials = {
      // etcd3's type says Buffer, but grpc-js createSsl takes null for "system roots".
      rootCertificate: tls.ca ?? (null as unknown as Buffer),
      privateKey: tls.key,
      certChain: tls.cert,
    };
    // grpc-js sends the endpoint's host as TLS SNI; for an IP address Node
    // warns on stderr (DEP0123). The certificate is still checked against the IP.
    if (cfg.endpoints.some((e) => isIP(e.host) !== 0)) silenceIpServernameWarning();
  }
  if (cfg.auth) {
    options.auth = { ...cfg.auth, callOptions: () => ({ deadline: Date.now() + timeout }) };
  }
  patchEtcd3WatchCreateFailure();
  patchEtcd3LeaseClock();
  // Loaded here, not on import: etcd3's index parses its protos when first
  // required (0.27 s here), which a CLI run that stops at a usage error or
  // `--help` never needs. Its errors, Lease and WatchManager load without it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Etcd3: Client } = require('etcd3') as typeof import('etcd3');
  return new Client(options);
}

/** The parts of etcd3's (internal) WatchManager the patch below touches. */
interface WatchManagerInternals {
  client: { client?: { authenticator?: { invalidateMetadata?: () => void } } };
  watchers: { id: string | null; emit(event: string, ...args: unknown[]): boolean }[];
  queue?: { queue: unknown[]; readQueue(): void };
  handleCreatedResponse(res: { canceled?: boolean; cancel_reason?: string; created?: boolean }): void;
  handleCancelResponse(watcher: unknown, res: unknown): void;
  handleError(err: Error): void;
  destroyStream(): void;
}

let watchPatched = false;

/**
 * Work around two etcd3 1.1.2 bugs in its shared watch stream, both hit by
 * a watch whose creation etcd refuses (answer `created` + `canceled`), which
 * is how etcd answers a watch it may not allow: "permission denied", or
 * "invalid auth token" on a stream opened with a token etcd no longer
 * knows (every token after an etcd restart; any token idle past
 * --auth-token-ttl):
 * - etcd3 never advances its attach queue past the refused watcher, so every
 *   later watch on that stream waits for its `created` answer forever (a
 *   resolver that never sees another change, with no error);
 * - etcd3 keeps the stale token: the stream, and each retry, is refused again.
 * Here a refused creation leaves the queue and the next watcher is attached;
 * for an auth-token refusal the cached token is dropped and the stream
 * re-established (its watchers see `disconnected`, as after any stream loss,
 * and re-attach with a fresh token). Idempotent; applied on first client.
 */
function patchEtcd3WatchCreateFailure(): void {
  if (watchPatched) return;
  watchPatched = true;
  const proto = WatchManager.prototype as unknown as WatchManagerInternals;
  const original = proto.handleCreatedResponse;
  proto.handleCreatedResponse = function (this: WatchManagerInternals, res) {
    if (!res.canceled || !this.queue) {
      original.call(this, res);
      return;
    }
    if (/invalid auth token|auth token|Unauthenticated/i.test(res.cancel_reason ?? '')) {
      this.client.client?.authenticator?.invalidateMetadata?.();
      this.handleError(new Error(`etcd refused the watch stream's auth token (${res.cancel_reason}); reconnecting with a fresh one`));
      return;
    }
    const queue = this.queue;
    const watcher = queue.queue.shift() ?? this.watchers.find((w) => w.id === null);
    if (watcher) this.handleCancelResponse(watcher, res);
    if (this.queue !== queue) return; // the stream was replaced meanwhile
    if (this.watchers.length === 0) this.destroyStream();
    else queue.readQueue();
  };
}

/**
 * Milliseconds on the system's monotonic clock (CLOCK_MONOTONIC, the clock of
 * process.hrtime): never stepped by NTP, `date -s`, a VM resume or
 * libfaketime, and the same in every process on the machine, so a deadline
 * computed here can be handed to another process (the lock's watchdog).
 * Every lease-validity decision in the mesh uses this clock, never Date.now().
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

let leasePatched = false;

/**
 * Work around etcd3 1.1.2's Lease measuring lease validity on the wall clock:
 * it stores `lastKeepAlive = Date.now()` and, on each keepalive reconnect,
 * declares the lease lost once `Date.now() - lastKeepAlive > 2 * TTL`. A
 * clock stepped back (NTP, VM resume) makes that check pass for as long as the
 * step; stepped forward, it drops a live lease. Here `lastKeepAlive` becomes
 * an accessor on the prototype: the setter records the monotonic time, and the
 * getter answers with "now on the wall clock minus the monotonic time elapsed",
 * so etcd3's own subtraction yields monotonic elapsed time whatever the wall
 * clock did. (Our Session declares loss after 1 TTL by itself; this keeps
 * etcd3's fallback honest too.) Idempotent; applied on first client.
 */
function patchEtcd3LeaseClock(): void {
  if (leasePatched) return;
  leasePatched = true;
  const mono = new WeakMap<object, number>();
  Object.defineProperty(Lease.prototype, 'lastKeepAlive', {
    configurable: true,
    get(this: object): number {
      const at = mono.get(this);
      return at === undefined ? Date.now() : Date.now() - (monotonicMs() - at);
    },
    set(this: object, _wallClock: number) {
      mono.set(this, monotonicMs());
    },
  });
}

let ipServernameSilenced = false;

/**
 * Drop Node's one-off DEP0123 warning ("Setting the TLS ServerName to an IP
 * address is not permitted by RFC 6066"), which grpc-js triggers for every
 * TLS target given as an IP address and which would otherwise land on
 * stderr, where the CLI promises one line per error. Only that warning is
 * dropped; verification of the certificate against the IP is unchanged.
 */
export function silenceIpServernameWarning(): void {
  if (ipServernameSilenced) return;
  ipServernameSilenced = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}
