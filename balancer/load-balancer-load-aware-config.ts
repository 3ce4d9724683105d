import type * as grpc from '@grpc/grpc-js';
import { DEFAULT_TUNING, type LoadAwareTuning } from './picker-load-aware';

/** The policy's name in service configs and on the command line (`--lb load_aware`). */
export const LOAD_AWARE = 'load_aware';

/**
 * `{ "load_aware": { "decayMs"?: number, "probeIntervalMs"?: number, ... } }`
 * in a service config: every field optional, each a positive number; a bad
 * one throws naming the field (grpc-js then refuses the service config).
 */
export class LoadAwareConfig implements grpc.experimental.TypedLoadBalancingConfig {
  constructor(
    readonly decayMs: number,
    readonly tuning: LoadAwareTuning,
  ) {}

  getLoadBalancerName(): string {
    return LOAD_AWARE;
  }

  toJsonObject(): object {
    return { [LOAD_AWARE]: { decayMs: this.decayMs, ...this.tuning } };
  }

  static createFromJson(obj: unknown): LoadAwareConfig {
    const o = (obj ?? {}) as Record<string, unknown>;
    const num = (k: string, def: number): number => {
      const v = o[k];
      if (v === undefined) return def;
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`load_aware config: ${k} must be a positive number`);
      return v;
    };
    return new LoadAwareConfig(num('decayMs', 300), {
      overrideRatio: num('overrideRatio', DEFAULT_TUNING.overrideRatio),
      probeIntervalMs: num('probeIntervalMs', DEFAULT_TUNING.probeIntervalMs),
      ejectRatio: num('ejectRatio', DEFAULT_TUNING.ejectRatio),
      ejectMinGapMs: num('ejectMinGapMs', DEFAULT_TUNING.ejectMinGapMs),
      ejectPriorSamples: num('ejectPriorSamples', DEFAULT_TUNING.ejectPriorSamples),
      readmitRatio: num('readmitRatio', DEFAULT_TUNING.readmitRatio),
      warmupMs: num('warmupMs', DEFAULT_TUNING.warmupMs),
      baseEjectionMs: num('baseEjectionMs', DEFAULT_TUNING.baseEjectionMs),
      maxEjectionMs: num('maxEjectionMs', DEFAULT_TUNING.maxEjectionMs),
      stallRatio: num('stallRatio', DEFAULT_TUNING.stallRatio),
      stallMinGapMs: num('stallMinGapMs', DEFAULT_TUNING.stallMinGapMs),
    });
  }
}
