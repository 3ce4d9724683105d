import type { EjectionCause, PickEntry } from './picker-load-aware';
import type { LoadAwareTuning } from './picker-load-aware-tuning';

/**
 * How long an ejected backend stays out, as gRPC A50 (outlier_detection)
 * has it: baseEjectionMs x a per-backend multiplier, at most maxEjectionMs.
 * Each ejection adds one to the multiplier, and so does each failed probe of
 * a backend ejected for failures (it "came back" and was bad again); every
 * ejectionDecayMs it spends in the rotation takes one off (A50 decrements
 * it on every interval the backend is not ejected). So a backend that keeps
 * failing stays out longer and longer, one that was bad once long ago is
 * judged afresh.
 */

/** The time out of `e` for its current multiplier, ms. */
export function ejectionTimeMs(e: PickEntry, tuning: LoadAwareTuning): number {
  return Math.min(tuning.maxEjectionMs, tuning.baseEjectionMs * e.multiplier);
}

/** The multiplier `e` would have at `now` after its time in the rotation since it last came back. */
export function decayedMultiplier(e: PickEntry, now: number, tuning: LoadAwareTuning): number {
  if (e.ejected) return e.multiplier;
  const steps = Math.floor(Math.max(0, now - e.activeSince) / tuning.ejectionDecayMs);
  return Math.max(0, e.multiplier - steps);
}

/**
 * The one writer of an entry's ejection state. `cause` ejects it (or, for
 * one already out, ejects it again: a failed probe), undefined lets it
 * back. On ejection the multiplier decays for the time spent in the
 * rotation, then grows by one; a backend ejected for failures gets no probe
 * before its time out has passed (each probe is a real call, and would
 * fail), one ejected for latency is probed at once (a slow probe costs a
 * hedge, not a failure, and is how it is measured again).
 */
export function markEjected(e: PickEntry, cause: EjectionCause | undefined, now: number, tuning: LoadAwareTuning): void {
  if (cause === undefined) {
    if (e.ejected) e.activeSince = now;
    e.ejectedFor = undefined;
    return;
  }
  e.multiplier = decayedMultiplier(e, now, tuning) + 1;
  e.ejectedFor = cause;
  e.ejectedAt = now;
  e.probeFrom = cause === 'failures' ? now + ejectionTimeMs(e, tuning) : now;
}

/**
 * How many of n backends may be out at once: strictly fewer than
 * maxEjectionPercent % of them, but one of two or more, never the only one
 * (with the default 50 %: max(1, ceil(n/2) - 1), so a brownout or a
 * fleet-wide failure of every backend still spreads the calls).
 */
export function maxEjected(n: number, maxEjectionPercent = 50): number {
  if (n < 2) return 0;
  return Math.min(n - 1, Math.max(1, Math.ceil((n * maxEjectionPercent) / 100) - 1));
}
