import * as grpc from '@grpc/grpc-js';
import type { ChannelOptions } from '@grpc/grpc-js';
import { componentLogger, type Logger } from '../core/logger';
import { HealthWatch, type HealthBackoff } from './health-check-watch';
import { HealthCheckedSubchannel, type HealthWatchRegistry } from './health-check-subchannel';

type Endpoint = grpc.experimental.Endpoint;
type Picker = grpc.experimental.Picker;
type PickArgs = grpc.experimental.PickArgs;
type PickResult = grpc.experimental.PickResult;
type ChannelControlHelper = grpc.experimental.ChannelControlHelper;
type TypedLoadBalancingConfig = grpc.experimental.TypedLoadBalancingConfig;
type Subchannel = ReturnType<grpc.experimental.SubchannelInterface['getRealSubchannel']>;
const { ChildLoadBalancerHandler, createChildChannelControlHelper, selectLbConfigFromList, PickResultType } = grpc.experimental;

/** The policy's name in service configs. */
export const HEALTH_CHECK = 'health_check';

/** grpc-js's defaults for the reconnect backoff, used for a failed Watch when the channel sets none. */
const DEFAULT_BACKOFF: HealthBackoff = { initialMs: 1_000, maxMs: 120_000 };

/**
 * `{ "health_check": { "serviceName": "", "childPolicy": [{ "load_aware": {} }] } }`:
 * gRPC A17's `healthCheckConfig.serviceName`, carried to the policy (grpc-js
 * hands a policy only its own config, not the service config's top level),
 * and the policy it wraps.
 */
export class HealthCheckConfig implements TypedLoadBalancingConfig {
  constructor(
    readonly serviceName: string,
    readonly childPolicy: TypedLoadBalancingConfig,
  ) {}

  getLoadBalancerName(): string {
    return HEALTH_CHECK;
  }

  toJsonObject(): object {
    return { [HEALTH_CHECK]: { serviceName: this.serviceName, childPolicy: [this.childPolicy.toJsonObject()] } };
  }

  static createFromJson(obj: unknown): HealthCheckConfig {
    const o = (obj ?? {}) as Record<string, unknown>;
    // A17: serviceName must be a JSON string ("" is the server as a whole).
    if (typeof o.serviceName !== 'string') throw new Error(`${HEALTH_CHECK} config: serviceName must be a string`);
    if (!Array.isArray(o.childPolicy)) throw new Error(`${HEALTH_CHECK} config: childPolicy must be an array`);
    const child = selectLbConfigFromList(o.childPolicy as grpc.LoadBalancingConfig[]);
    if (!child) throw new Error(`${HEALTH_CHECK} config: childPolicy names no registered policy`);
    return new HealthCheckConfig(o.serviceName, child);
  }
}

/** Hands grpc-js the subchannel our wrapper wraps (as a wrapping policy must), keeping the child's callbacks. */
class UnwrappingPicker implements Picker {
  constructor(private readonly inner: Picker) {}

  pick(args: PickArgs): PickResult {
    const r = this.inner.pick(args);
    if (r.pickResultType === PickResultType.COMPLETE && r.subchannel instanceof HealthCheckedSubchannel) return { ...r, subchannel: r.subchannel.wrapped };
    return r;
  }
}

/**
 * Client-side health checking (gRPC A17) as a parent policy over any child
 * that picks per backend through pick_first leaves (load_aware,
 * round_robin): every subchannel the child creates is wrapped
 * (HealthCheckedSubchannel), each backend's connection carries one
 * `grpc.health.v1.Health/Watch` (HealthWatch), and a backend not SERVING
 * gets no picks while it says so, whatever the registry lists. The child
 * sees only connectivity and health, as it would under outlier_detection.
 */
export class HealthCheckLoadBalancer implements grpc.experimental.LoadBalancer, HealthWatchRegistry {
  private readonly child: InstanceType<typeof ChildLoadBalancerHandler>;
  private readonly watches = new Map<Subchannel, HealthWatch>();
  private serviceName = '';
  private backoff: HealthBackoff = DEFAULT_BACKOFF;
  private readonly log: Logger;
  private destroyed = false;

  constructor(helper: ChannelControlHelper) {
    this.log = componentLogger('lb', { policy: HEALTH_CHECK });
    this.child = new ChildLoadBalancerHandler(
      createChildChannelControlHelper(helper, {
        createSubchannel: (address, options) => new HealthCheckedSubchannel(helper.createSubchannel(address, options), this),
        updateState: (state, picker, err) => helper.updateState(state, state === grpc.connectivityState.READY ? new UnwrappingPicker(picker) : picker, err),
      }),
    );
  }

  updateAddressList(endpoints: grpc.experimental.StatusOr<Endpoint[]>, config: TypedLoadBalancingConfig, options: ChannelOptions, resolutionNote: string): boolean {
    if (!(config instanceof HealthCheckConfig)) return false;
    const backoff = {
      initialMs: positive(options['grpc.initial_reconnect_backoff_ms']) ?? DEFAULT_BACKOFF.initialMs,
      maxMs: positive(options['grpc.max_reconnect_backoff_ms']) ?? DEFAULT_BACKOFF.maxMs,
    };
    if (backoff.initialMs !== this.backoff.initialMs || backoff.maxMs !== this.backoff.maxMs) {
      this.backoff = backoff;
      for (const w of this.watches.values()) w.setBackoff(backoff);
    }
    if (config.serviceName !== this.serviceName) {
      this.log.info({ event: 'health.service_name', from: this.serviceName, to: config.serviceName }, `health checking service ${JSON.stringify(this.serviceName)} -> ${JSON.stringify(config.serviceName)}`);
      this.serviceName = config.serviceName;
      for (const w of this.watches.values()) w.setService(config.serviceName);
    }
    return this.child.updateAddressList(endpoints, config.childPolicy, options, resolutionNote);
  }

  acquire(real: Subchannel, fn: () => void): HealthWatch {
    let watch = this.watches.get(real);
    if (!watch) {
      watch = new HealthWatch(real, this.serviceName, this.backoff, this.log);
      this.watches.set(real, watch);
      // After destroy, a late wrapper gets a Watch that is closed at once: told nothing, asks nothing.
      if (this.destroyed) this.closeWatch(real, watch);
    }
    watch.subscribe(fn);
    return watch;
  }

  peek(real: Subchannel): HealthWatch | undefined {
    return this.watches.get(real);
  }

  release(real: Subchannel, fn: () => void): void {
    const watch = this.watches.get(real);
    if (watch?.unsubscribe(fn)) this.closeWatch(real, watch);
  }

  private closeWatch(real: Subchannel, watch: HealthWatch): void {
    watch.close();
    this.watches.delete(real);
  }

  exitIdle(): void {
    this.child.exitIdle();
  }

  resetBackoff(): void {
    this.child.resetBackoff();
  }

  /** The child first (it unrefs its subchannels), then any Watch left. Idempotent. */
  destroy(): void {
    this.destroyed = true;
    this.child.destroy();
    for (const [real, watch] of [...this.watches]) this.closeWatch(real, watch);
  }

  getTypeName(): string {
    return HEALTH_CHECK;
  }
}

function positive(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined;
}

/**
 * A service config with A17 health checking composed in: every
 * `loadBalancingConfig` entry becomes the child of `health_check`, and the
 * top-level `healthCheckConfig` is kept as A17 spells it (read by any other
 * gRPC client given the same config; grpc-js ignores it). Unchanged without
 * `healthCheck`, and under pick_first, which A17 leaves unchecked (an
 * unhealthy pick would only be dropped and dialled again).
 */
export function withHealthCheck(serviceConfig: { loadBalancingConfig: grpc.LoadBalancingConfig[] }, healthCheck: { serviceName: string } | undefined): object {
  const names = serviceConfig.loadBalancingConfig.flatMap((c) => Object.keys(c));
  if (!healthCheck || names.includes('pick_first')) return serviceConfig;
  registerHealthCheckBalancer();
  return {
    ...serviceConfig,
    loadBalancingConfig: [{ [HEALTH_CHECK]: { serviceName: healthCheck.serviceName, childPolicy: serviceConfig.loadBalancingConfig } }],
    healthCheckConfig: { serviceName: healthCheck.serviceName },
  };
}

let registered = false;

/** Register `health_check` with grpc-js (idempotent). */
export function registerHealthCheckBalancer(): void {
  if (registered) return;
  grpc.experimental.registerLoadBalancerType(HEALTH_CHECK, HealthCheckLoadBalancer, HealthCheckConfig);
  registered = true;
}
