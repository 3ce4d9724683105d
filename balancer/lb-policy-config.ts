import type { LoadBalancingConfig } from '@grpc/grpc-js';
import { LOAD_AWARE } from './load-balancer-load-aware-config';

/** grpc-js's own outlier detection (gRFC A50) around round_robin: `--lb outlier_detection`, the side-by-side comparison for failure ejection. */
export const OUTLIER_DETECTION = 'outlier_detection';

/** What a mesh client may set of the load_aware policy's failure handling (the rest stays at its defaults). */
export interface LoadAwareOptions {
  /** Status code names that count against a backend (failure-codes.ts); [] counts none. Default: the documented table. */
  failureCodes?: readonly string[];
  /** At most this share of backends ejected at once, 0 < p <= 100. Default 50. */
  maxEjectionPercent?: number;
}

const ms = (n: number) => ({ seconds: Math.floor(n / 1000), nanos: (n % 1000) * 1_000_000 });

/**
 * grpc-js's outlier_detection, tuned to act on the time scale load_aware
 * does rather than A50's defaults (interval 10 s, base ejection 30 s, five
 * hosts at least, 10% ejected at most, which never ejects one of four):
 * every 100 ms, a backend that failed over 50% of at least 10 calls in the
 * last interval is ejected for 250 ms x its multiplier (at most 5 s), at
 * most half the backends (grpc-js ejects while fewer than that share are
 * out). It counts every status but OK as a failure, and has no table.
 */
export function outlierDetectionConfig(): LoadBalancingConfig {
  return {
    [OUTLIER_DETECTION]: {
      interval: ms(100),
      base_ejection_time: ms(250),
      max_ejection_time: ms(5_000),
      max_ejection_percent: 50,
      failure_percentage_ejection: { threshold: 50, enforcement_percentage: 100, minimum_hosts: 2, request_volume: 10 },
      child_policy: [{ round_robin: {} }],
    },
  };
}

/** The loadBalancingConfig entry of a service config for policy `lb`. */
export function policyConfig(lb: string, loadAware: LoadAwareOptions = {}): LoadBalancingConfig {
  if (lb === OUTLIER_DETECTION) return outlierDetectionConfig();
  if (lb !== LOAD_AWARE) return { [lb]: {} };
  const o: Record<string, unknown> = {};
  if (loadAware.failureCodes !== undefined) o.failureCodes = [...loadAware.failureCodes];
  if (loadAware.maxEjectionPercent !== undefined) o.maxEjectionPercent = loadAware.maxEjectionPercent;
  return { [LOAD_AWARE]: o };
}
