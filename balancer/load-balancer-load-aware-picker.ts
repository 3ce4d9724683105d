import * as grpc from '@grpc/grpc-js';
import { choose, LARGE_POOL, WeightedSampler, type LoadAwareTuning, type PickEntry } from './picker-load-aware';
import { refreshFailureFactor } from './ejection-failures';
import type { FailureCodes } from './failure-codes';
import { isTransportReset } from './channel-retry';
import { meshObserver } from '../core/mesh-observer';

type Picker = grpc.experimental.Picker;
type PickArgs = grpc.experimental.PickArgs;
type PickResult = grpc.experimental.PickResult;
type LeafLoadBalancer = grpc.experimental.LeafLoadBalancer;
const { PickResultType } = grpc.experimental;

/**
 * An attempt cancelled unanswered (another backend answered first, though it
 * started a hedging delay later; or the deadline passed) counts as at least
 * this slow in the mean that ejection looks at (not in the peak that picking
 * looks at): losing a hedge race is strong evidence of slowness.
 */
const NO_ANSWER_PENALTY_MS = 100;

/** One READY backend as the picker sees it: its pick_first child and its bookkeeping (the balancer's, outliving pickers). */
export interface PickerChild {
  leaf: LeafLoadBalancer;
  entry: PickEntry;
}

/** What the picker reads from (and counts into) the balancer that made it. */
export interface PickerHost {
  readonly neutralMs: number;
  readonly tuning: LoadAwareTuning;
  /** Calls in flight over every backend; the picker counts each started attempt in and out, once. */
  outstandingTotal: number;
  /** Which statuses count against the backend that answered them. */
  readonly failureCodes: FailureCodes;
  /** The peers' failure rate, from the last review. */
  readonly failureReference: number;
  /** A failure was just booked on `entry`: the host may review ejections at once rather than on its next tick. */
  failed(entry: PickEntry): void;
}

/**
 * How an attempt's end is booked on its backend (per attempt: each hedge
 * and retry is its own attempt on its own backend, so the policy sees
 * exactly what each backend did, and a retried failure counts once, where
 * it happened):
 * - `ok`, `answered` (a status that is the caller's fault, e.g.
 *   INVALID_ARGUMENT): a latency sample, and a success for the failure rate.
 * - `fault` (failure-codes.ts counts it): a failure for the failure rate,
 *   and no latency sample (a fast failure must not make a broken backend
 *   look fast, nor a failing one slow: failures steer through the failure
 *   factor and ejection instead). A DEADLINE_EXCEEDED fault (the backend
 *   was silent) still counts as a call left unanswered.
 * - `unanswered` (CANCELLED, a DEADLINE_EXCEEDED or UNAVAILABLE the table
 *   does not count, a transport reset): no answer, counted as at least
 *   NO_ANSWER_PENALTY_MS in the mean ejection looks at (not in the peak),
 *   and neither success nor failure: a hedge cancelled because another
 *   backend answered first says nothing about failures.
 */
export type AttemptEnd = 'ok' | 'answered' | 'fault' | 'unanswered';

export function classifyEnd(code: grpc.status, details: string, silent: boolean, codes: FailureCodes): AttemptEnd {
  if (code === grpc.status.OK) return 'ok';
  if (isTransportReset({ code, details, metadata: new grpc.Metadata() })) return 'unanswered';
  if (codes.counts(code, silent)) return 'fault';
  if (code === grpc.status.CANCELLED || code === grpc.status.DEADLINE_EXCEEDED || code === grpc.status.UNAVAILABLE) return 'unanswered';
  return 'answered';
}

/**
 * Picks over READY children with the load-aware math of
 * picker-load-aware.ts. Each attempt is counted on its backend from
 * `onCallStarted` to `onCallEnded` (hedged attempts and cancelled losers
 * included: a loser's time counts as latency, which is how a stuck backend
 * shows itself).
 */
export class LoadAwarePicker implements Picker {
  private readonly eligible: PickEntry[];
  private readonly ejected: PickEntry[];
  private readonly byEntry = new Map<PickEntry, PickerChild>();
  private readonly sampler: WeightedSampler | undefined;

  constructor(
    eligible: PickerChild[],
    ejected: PickerChild[],
    private readonly host: PickerHost,
  ) {
    this.eligible = eligible.map((c) => c.entry);
    this.ejected = ejected.map((c) => c.entry);
    for (const c of [...eligible, ...ejected]) this.byEntry.set(c.entry, c);
    this.sampler = this.eligible.length > LARGE_POOL ? new WeightedSampler(this.eligible) : undefined;
  }

  pick(args: PickArgs): PickResult {
    const now = performance.now();
    const host = this.host;
    const entry = choose(this.eligible, this.ejected, { now, neutralMs: host.neutralMs, random: Math.random, tuning: host.tuning, totalOutstanding: host.outstandingTotal }, this.sampler);
    const child = entry && this.byEntry.get(entry);
    if (!child) return { pickResultType: PickResultType.QUEUE, subchannel: null, status: null, onCallStarted: null, onCallEnded: null };
    const result = child.leaf.getPicker().pick(args);
    if (result.pickResultType !== PickResultType.COMPLETE) return result;
    const load = child.entry.load;
    let token = 0;
    const started = result.onCallStarted;
    const ended = result.onCallEnded;
    const observer = meshObserver();
    observer?.picked?.(load.addr);
    return {
      ...result,
      onCallStarted: () => {
        token = load.start(performance.now());
        host.outstandingTotal++;
        observer?.outstanding?.(load.addr, 1);
        started?.();
      },
      onCallEnded: (code, details, metadata) => {
        // Only a call that started counts, once (grpc-js may end one that never started on the subchannel).
        if (token !== 0) {
          const now = performance.now();
          const end = classifyEnd(code, details, load.unansweredSince(token), host.failureCodes);
          if (end === 'ok' || end === 'answered') load.end(token, now);
          else if (end === 'unanswered' || code === grpc.status.DEADLINE_EXCEEDED) load.end(token, now, NO_ANSWER_PENALTY_MS, false, false);
          else load.endUnmeasured(token, now, code !== grpc.status.UNAVAILABLE);
          if (end !== 'unanswered') {
            child.entry.failures.record(end === 'fault', now);
            refreshFailureFactor(child.entry, now, host.failureReference, host.tuning);
            if (end === 'fault') host.failed(child.entry);
          }
          host.outstandingTotal--;
          token = 0;
        }
        observer?.outstanding?.(load.addr, -1);
        ended?.(code, details, metadata);
      },
    };
  }
}
