import type { PickEntry } from './picker-load-aware';
import type { LoadAwareTuning } from './picker-load-aware-tuning';

/**
 * How failures steer the `load_aware` policy, pure (clock passed in).
 *
 * A backend is judged against its peers, never on its own: the reference
 * is the failure rate of the better quarter of the backends in the rotation
 * (the lower quartile of their rates; the best one's with four or fewer).
 * Its excess is its own rate, shrunk towards the reference as if
 * `failurePriorSamples` attempts at that rate had joined it (three failures
 * in a row stand out, one among a thousand does not), minus the reference.
 * - excess > failureEjectExcess (0.25; on at least failureMinVolume
 *   attempts): ejected (ejection-review.ts), within max_ejection_percent.
 * - a run of failures in a row its peers' rate would make rarer than once
 *   in a million (at least failureConsecutive, 5, with healthy peers; 6 at
 *   a 10% reference, 9 at 20%, none above 50%): ejected too. A backend that
 *   breaks all at once is caught in a few calls this way, while its rate,
 *   over a window still full of its earlier successes, rises for a second.
 * - up to it: its pick weight is scaled by 1 - excess / failureEjectExcess
 *   (the failure factor), so a backend failing part of its calls gets less
 *   traffic in proportion. A backend failing 20% beside healthy peers keeps
 *   a fifth of its weight, a quarter of its fair share among four.
 * - every backend failing alike (a bad release, a shared dependency down):
 *   no excess, no ejection and no shift, so the calls' failed share is the
 *   backends' own rate, neither amplified nor hidden.
 */

/** The factor never falls under this, so a pool whose every backend fails still has weights to share by. */
export const MIN_FAILURE_FACTOR = 0.02;

/** The peers' failure rate: the lower quartile of the rates of `entries` in the rotation with any recent attempt; 0 if none. */
export function failureReference(entries: readonly PickEntry[], now: number): number {
  const rates: number[] = [];
  for (const e of entries) {
    if (e.ejected || e.failures.volume(now) <= 0) continue;
    rates.push(e.failures.rate()!);
  }
  if (rates.length === 0) return 0;
  rates.sort((a, b) => a - b);
  return rates[(rates.length - 1) >> 2];
}

/** How far `e`'s failure rate (shrunk towards `reference`) is above `reference`; 0 when it is not. */
export function failureExcess(e: PickEntry, now: number, reference: number, tuning: LoadAwareTuning): number {
  const n = e.failures.volume(now);
  if (n <= 0) return 0;
  const shrunk = (e.failures.failed(now) + reference * tuning.failurePriorSamples) / (n + tuning.failurePriorSamples);
  return Math.max(0, shrunk - reference);
}

/** The factor an excess scales the pick weight by: 1 at none, falling linearly to MIN_FAILURE_FACTOR at failureEjectExcess. */
export function failureFactorOf(excess: number, tuning: LoadAwareTuning): number {
  return Math.max(MIN_FAILURE_FACTOR, 1 - excess / tuning.failureEjectExcess);
}

/** Set `e.failureFactor` for `now` (the one writer of it): after each of its attempts, and on each review. */
export function refreshFailureFactor(e: PickEntry, now: number, reference: number, tuning: LoadAwareTuning): void {
  e.failureFactor = failureFactorOf(failureExcess(e, now, reference, tuning), tuning);
}

/** A run of failures in a row at the peers' failure rate less likely than this is no accident. */
const RUN_ODDS = 1e-6;

/** How many failures in a row eject a backend whose peers fail at rate `reference` (Infinity: none do). */
export function failureRunLimit(reference: number, tuning: LoadAwareTuning): number {
  if (reference >= 0.5) return Infinity;
  if (reference <= 0) return tuning.failureConsecutive;
  return Math.max(tuning.failureConsecutive, Math.ceil(Math.log(RUN_ODDS) / Math.log(reference)));
}

/** How strongly `e` should be ejected for failures now: 0 when it should not; a run of failures ranks above any excess. */
export function failureSeverity(e: PickEntry, now: number, reference: number, tuning: LoadAwareTuning): number {
  if (e.failures.consecutive >= failureRunLimit(reference, tuning)) return 1 + e.failures.consecutive / 1e6;
  const excess = failureExcess(e, now, reference, tuning);
  return e.failures.volume(now) >= tuning.failureMinVolume && excess > tuning.failureEjectExcess ? excess : 0;
}

/** Whether `e`, in the rotation, fails enough more than its peers to be ejected. */
export function failsTooOften(e: PickEntry, now: number, reference: number, tuning: LoadAwareTuning): boolean {
  return failureSeverity(e, now, reference, tuning) > 0;
}
