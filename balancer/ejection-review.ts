import { lowerMedian, type EjectionCause, type PickEntry } from './picker-load-aware';
import type { LoadAwareTuning } from './picker-load-aware-tuning';
import { ejectionTimeMs, maxEjected } from './ejection-time';
import { failureReference, failureSeverity } from './ejection-failures';

/**
 * Which backends leave the rotation and which come back, reviewed on a
 * timer (pure: the clock is passed in, the entries are not changed).
 *
 * For latency: a backend whose mean latency (oldest outstanding call's age
 * included) exceeds `ejectRatio` times the median of its peers, and by at
 * least `ejectMinGapMs` (the mean first shrunk towards the median as if
 * `ejectPriorSamples` calls at the median had joined it: one slow answer
 * among a thousand barely moves a busy backend's mean, but it is the whole
 * mean of one that gets a few calls a second, as each of a thousand
 * backends does), or that has been silent (calls sent, none answered) for
 * longer than `stallRatio` times the median (and by `stallMinGapMs`), is
 * ejected; it gets probes at once and comes back once it answers, its mean
 * is under `readmitRatio` times the median and its time out has passed.
 *
 * For failures (ejection-failures.ts): a backend failing more than its
 * peers by `failureEjectExcess`, or failing a run of calls in a row its
 * peers' rate makes implausible, is ejected; it gets no call until its time
 * out has passed, then one probe at a time: a probe that succeeds lets it
 * back (judged afresh), one that fails ejects it again for longer. Any
 * ejected backend whose probe fails is held for failures from then on.
 *
 * At most maxEjected(n, maxEjectionPercent) of n backends are out at once,
 * for any reason (none of one); failing backends are ejected before slow
 * ones, the worst first.
 */
export interface EjectionReview {
  /** The peers' median mean latency, ms (undefined when nothing is measured yet). */
  referenceMs: number | undefined;
  /** The peers' failure rate (ejection-failures.ts failureReference). */
  failureReference: number;
  /** To eject now, with why (`cause`). */
  eject: PickEntry[];
  cause: Map<PickEntry, EjectionCause>;
  /** To let back. */
  readmit: PickEntry[];
  /** Ejected already, and a probe failed: to eject again, for failures, for longer. */
  extend: PickEntry[];
}

/** The outcome of the last attempt on ejected `e` that was a probe (ended after its time out began to allow probes). */
function probeOutcome(e: PickEntry): 'ok' | 'failed' | undefined {
  const last = e.failures.last;
  if (!last || last.at <= e.ejectedAt || last.at < e.probeFrom) return undefined;
  return last.failed ? 'failed' : 'ok';
}

/** Which backends to eject, extend and re-admit now (see the file comment). */
export function reviewEjections(entries: PickEntry[], now: number, tuning: LoadAwareTuning): EjectionReview {
  const lat = new Map<PickEntry, number>();
  for (const e of entries) {
    const m = e.load.meanLatencyMs(now);
    if (m !== undefined) lat.set(e, m);
  }
  const ref = lowerMedian([...lat.values()]);
  const failRef = failureReference(entries, now);
  // What a backend is judged on: its mean shrunk towards the median by the prior, never below its oldest call's age.
  const evidence = (e: PickEntry) => {
    const m = lat.get(e);
    if (m === undefined || ref === undefined) return undefined;
    const n = e.load.meanSampleCount;
    return Math.max((m * n + ref * tuning.ejectPriorSamples) / (n + tuning.ejectPriorSamples), e.load.oldestAgeMs(now));
  };
  const stallLimit = ref === undefined ? Infinity : Math.max(tuning.stallRatio * ref, ref + tuning.stallMinGapMs);
  const extend: PickEntry[] = [];
  const readmit: PickEntry[] = [];
  for (const e of entries) {
    if (!e.ejected) continue;
    const probe = probeOutcome(e);
    if (probe === 'failed') extend.push(e);
    else if (e.ejectedFor === 'failures') {
      if (probe === 'ok') readmit.push(e);
    } else if (ref !== undefined && now - e.ejectedAt >= ejectionTimeMs(e, tuning) && e.load.stallMs(now) <= stallLimit && (lat.get(e) ?? 0) <= Math.max(tuning.readmitRatio * ref, ref + tuning.ejectMinGapMs / 2)) {
      readmit.push(e);
    }
  }
  const stillOut = entries.filter((e) => e.ejected).length - readmit.length;
  const room = maxEjected(entries.length, tuning.maxEjectionPercent) - stillOut;
  const cause = new Map<PickEntry, EjectionCause>();
  if (room <= 0) return { referenceMs: ref, failureReference: failRef, eject: [], cause, readmit, extend };
  const severity = new Map(entries.filter((e) => !e.ejected).map((e) => [e, failureSeverity(e, now, failRef, tuning)]));
  const failing = [...severity.keys()].filter((e) => severity.get(e)! > 0).sort((x, y) => severity.get(y)! - severity.get(x)!);
  for (const e of failing) cause.set(e, 'failures');
  const slow =
    ref === undefined
      ? []
      : entries
          .filter((e) => {
            if (e.ejected || cause.has(e)) return false;
            if (e.load.stallMs(now) > stallLimit) return true;
            const x = now - e.since >= tuning.warmupMs ? evidence(e) : undefined;
            return x !== undefined && x > tuning.ejectRatio * ref && x > ref + tuning.ejectMinGapMs;
          })
          .sort((x, y) => Math.max(lat.get(y) ?? 0, y.load.stallMs(now)) - Math.max(lat.get(x) ?? 0, x.load.stallMs(now)));
  for (const e of slow) cause.set(e, 'latency');
  const eject = [...failing, ...slow].slice(0, room);
  for (const e of [...cause.keys()]) if (!eject.includes(e)) cause.delete(e);
  return { referenceMs: ref, failureReference: failRef, eject, cause, readmit, extend };
}
