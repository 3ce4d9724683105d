import type * as grpc from '@grpc/grpc-js';
import { DEFAULT_TUNING, type LoadAwareTuning } from './picker-load-aware-tuning';
import { BadFailureCodesError, FailureCodes } from './failure-codes';

/** The policy's name in service configs and on the command line (`--lb load_aware`). */
export const LOAD_AWARE = 'load_aware';

/** Tuning fields that are shares, not open-ended positive numbers: their upper bound. */
const AT_MOST: Partial<Record<keyof LoadAwareTuning, number>> = { maxEjectionPercent: 100, failureEjectExcess: 1 };

/**
 * `{ "load_aware": { "decayMs"?: number, "probeIntervalMs"?: number, ...,
 * "failureCodes"?: ["INTERNAL", ...] } }` in a service config: every field
 * optional, each number positive (`maxEjectionPercent` at most 100,
 * `failureEjectExcess` at most 1), `failureCodes` a list of status code
 * names (failure-codes.ts; `[]` counts nothing). A bad field throws naming
 * it (grpc-js then refuses the service config); so does an unknown one,
 * since a misspelt tuning silently left at its default is worse.
 */
export class LoadAwareConfig implements grpc.experimental.TypedLoadBalancingConfig {
  constructor(
    readonly decayMs: number,
    readonly tuning: LoadAwareTuning,
    readonly failureCodes: FailureCodes = FailureCodes.DEFAULT,
  ) {}

  getLoadBalancerName(): string {
    return LOAD_AWARE;
  }

  toJsonObject(): object {
    return { [LOAD_AWARE]: { decayMs: this.decayMs, ...this.tuning, failureCodes: [...this.failureCodes.names] } };
  }

  static createFromJson(obj: unknown): LoadAwareConfig {
    const o = (obj ?? {}) as Record<string, unknown>;
    const known = new Set(['decayMs', 'failureCodes', ...Object.keys(DEFAULT_TUNING)]);
    for (const k of Object.keys(o)) if (!known.has(k)) throw new Error(`load_aware config: unknown field ${JSON.stringify(k)}`);
    const num = (k: string, def: number, max = Infinity): number => {
      const v = o[k];
      if (v === undefined) return def;
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > max) throw new Error(`load_aware config: ${k} must be a positive number${max < Infinity ? ` of at most ${max}` : ''}`);
      return v;
    };
    const tuning = Object.fromEntries(Object.entries(DEFAULT_TUNING).map(([k, def]) => [k, num(k, def, AT_MOST[k as keyof LoadAwareTuning])])) as unknown as LoadAwareTuning;
    return new LoadAwareConfig(num('decayMs', 300), tuning, failureCodesOf(o.failureCodes));
  }
}

function failureCodesOf(v: unknown): FailureCodes {
  if (v === undefined) return FailureCodes.DEFAULT;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new Error('load_aware config: failureCodes must be a list of status code names');
  try {
    return FailureCodes.of(v as string[]);
  } catch (err) {
    if (err instanceof BadFailureCodesError) throw new Error(`load_aware config: failureCodes: ${err.message}`);
    throw err;
  }
}
