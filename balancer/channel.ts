import * as grpc from '@grpc/grpc-js';
import type { ChannelOptions } from '@grpc/grpc-js';
import { unavailableRetryInterceptor } from './channel-retry';

/**
 * The channel a mesh client should use: grpc-js's own `round_robin` over the
 * resolver's endpoints, hedging for idempotent methods, and keepalive pings
 * fast enough to notice a hung backend within a second.
 *
 * Why hedging (not plain retries): a backend that hangs (process stopped, TCP
 * open) produces no error to retry on; a call stuck there would simply miss
 * its deadline. Hedging sends the call again to the next backend after
 * `hedgingDelayMs` and keeps the first answer. UNAVAILABLE is non-fatal, so a
 * connection dropped by a killed server is re-sent at once: the same
 * guarantee a retry policy gives. Why keepalive: once a ping goes unanswered
 * (`keepaliveTimeMs` + `keepaliveTimeoutMs`), grpc-js closes the connection,
 * every attempt stuck on it fails UNAVAILABLE and is re-sent elsewhere, and
 * round_robin stops picking the backend until it answers a handshake again.
 * Outlier detection was considered and left out: its ejection works on call
 * outcomes over an interval of seconds, slower than keepalive here.
 */
export interface MeshChannelConfig {
  /** Fully-qualified services whose methods are idempotent and may be hedged, e.g. `helloworld.Greeter`. */
  idempotentServices: string[];
  /** Total attempts per call, first included (grpc-js caps this at 5). Default 5. */
  maxAttempts?: number;
  /** Delay before each further hedged attempt, ms. Default 150. */
  hedgingDelayMs?: number;
  /** Keepalive ping interval per connection, ms. Default 200. */
  keepaliveTimeMs?: number;
  /** How long a ping may go unanswered before the connection is dropped, ms. Default 400. */
  keepaliveTimeoutMs?: number;
}

/** The service config: round_robin plus a hedging policy per idempotent service. */
export function meshServiceConfig(cfg: MeshChannelConfig): object {
  const seconds = (cfg.hedgingDelayMs ?? 150) / 1000;
  return {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: cfg.idempotentServices.map((service) => ({ service })),
        hedgingPolicy: {
          maxAttempts: cfg.maxAttempts ?? 5,
          hedgingDelay: `${seconds}s`,
          nonFatalStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  };
}

/** Channel options for a mesh client; spread extra options over them if needed. */
export function meshChannelOptions(cfg: MeshChannelConfig): ChannelOptions {
  return {
    'grpc.service_config': JSON.stringify(meshServiceConfig(cfg)),
    'grpc.service_config_disable_resolution': 1,
    'grpc.enable_retries': 1,
    'grpc.keepalive_time_ms': cfg.keepaliveTimeMs ?? 200,
    'grpc.keepalive_timeout_ms': cfg.keepaliveTimeoutMs ?? 400,
    'grpc.keepalive_permit_without_calls': 1,
    // A backend that comes back (restarted, resumed) is dialled again quickly.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1_000,
  };
}

/**
 * Everything a generated client's constructor should get: the channel
 * options above plus the UNAVAILABLE retry interceptor for calls that
 * hedging cannot retry (committed attempts; see channel-retry.ts).
 */
export function meshClientOptions(cfg: MeshChannelConfig): grpc.ClientOptions {
  return { ...meshChannelOptions(cfg), interceptors: [unavailableRetryInterceptor(cfg.idempotentServices)] };
}

/**
 * Server options for mesh greeters. Empty on purpose: grpc-js servers do not
 * police client pings, so the 200 ms keepalive above is accepted as is. A Go
 * gRPC server would (default minimum ping interval 5 min) and answer with
 * GOAWAY too_many_pings; against Go backends, raise keepaliveTimeMs or relax
 * the server's keepalive enforcement policy.
 */
export const MESH_SERVER_OPTIONS: ChannelOptions = {};

export type ChannelCredentials = grpc.ChannelCredentials;
