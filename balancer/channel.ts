import * as grpc from '@grpc/grpc-js';
import type { ChannelOptions } from '@grpc/grpc-js';
import { hedgingInterceptor } from './channel-retry';
import { RetryBudget, type RetryBudgetOptions } from './retry-budget';
import { LOAD_AWARE, registerLoadAwareBalancer } from './load-balancer-load-aware';
import { withHealthCheck } from './load-balancer-health-check';
import { OUTLIER_DETECTION, policyConfig, type LoadAwareOptions } from './lb-policy-config';

/**
 * The channel a mesh client should use: the load-aware policy (default) or
 * another registered one over the resolver's endpoints, and hedging plus
 * UNAVAILABLE retries for idempotent methods within a retry budget
 * (channel-retry.ts, retry-budget.ts).
 *
 * No keepalive pings: standard gRPC servers (C core, Go, Java) allow a
 * client one ping per 5 minutes by default and answer faster ones with
 * GOAWAY too_many_pings. A hung backend (process stopped, TCP open) is found
 * from what calls see instead: its calls stop completing, so their age
 * raises its latency estimate at once, the picker sends new calls elsewhere
 * and ejects it, and calls stuck there are hedged to another backend within
 * a few typical latencies.
 */
export interface MeshChannelConfig {
  /** Fully-qualified services whose methods are idempotent and may be hedged, e.g. `helloworld.Greeter`. */
  idempotentServices: string[];
  /** Load-balancing policy name (see LB_POLICIES). Default `load_aware`. */
  lb?: string;
  /** Total attempts per call, first included. Default 5. */
  maxAttempts?: number;
  /** Upper bound of the adaptive hedging delay, ms. Default 400. */
  hedgingDelayMs?: number;
  /** Retry budget: extra attempts per call over 10 s (default 0.2), plus a floor per second (default 10). */
  retryBudget?: RetryBudgetOptions;
  /**
   * Client-side health checking (gRPC A17's `healthCheckConfig`): one
   * `grpc.health.v1.Health/Watch` per backend for `serviceName` ("" is the
   * server as a whole), and no picks of a backend while it is not SERVING.
   * Unset: none (A17's default); not with pick_first (load-balancer-health-check.ts).
   */
  healthCheckConfig?: { serviceName: string };
  /** load_aware only: its failure table and ejection bound (lb-policy-config.ts). */
  loadAware?: LoadAwareOptions;
}

/** Policies `--lb` accepts. `load_aware` is the default; the others are grpc-js's own. */
export const LB_POLICIES = [LOAD_AWARE, 'round_robin', 'pick_first', OUTLIER_DETECTION] as const;
export type LbPolicy = (typeof LB_POLICIES)[number];
export const DEFAULT_LB: LbPolicy = LOAD_AWARE;

/** The service config: the chosen policy, under health checking when asked. Hedging is the interceptor's (see channel-retry.ts). */
export function meshServiceConfig(cfg: MeshChannelConfig): object {
  const lb = cfg.lb ?? DEFAULT_LB;
  if (lb === LOAD_AWARE) registerLoadAwareBalancer();
  return withHealthCheck({ loadBalancingConfig: [policyConfig(lb, cfg.loadAware)] }, cfg.healthCheckConfig);
}

/** Channel options for a mesh client; spread extra options over them if needed. */
export function meshChannelOptions(cfg: MeshChannelConfig): ChannelOptions {
  return {
    'grpc.service_config': JSON.stringify(meshServiceConfig(cfg)),
    'grpc.service_config_disable_resolution': 1,
    // A backend that comes back (restarted, resumed) is dialled again quickly.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1_000,
  };
}

/**
 * Everything a generated client's constructor should get: the channel
 * options above plus the hedging interceptor, with one retry budget per client.
 */
export function meshClientOptions(cfg: MeshChannelConfig = { idempotentServices: [] }): grpc.ClientOptions {
  const budget = new RetryBudget(cfg.retryBudget);
  return {
    ...meshChannelOptions(cfg),
    // The hedging interceptor also reports each logical call to the process's observer (client metrics).
    interceptors: [hedgingInterceptor({ idempotentServices: cfg.idempotentServices, maxAttempts: cfg.maxAttempts, maxHedgeMs: cfg.hedgingDelayMs, budget })],
  };
}

/**
 * Server options for mesh greeters: grpc-js's defaults. Mesh clients send no
 * keepalive pings, so there is nothing to relax.
 */
export const MESH_SERVER_OPTIONS: ChannelOptions = {};

export type ChannelCredentials = grpc.ChannelCredentials;
