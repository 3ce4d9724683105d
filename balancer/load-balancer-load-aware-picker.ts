import * as grpc from '@grpc/grpc-js';
import { choose, LARGE_POOL, WeightedSampler, type LoadAwareTuning, type PickEntry } from './picker-load-aware';
import { meshObserver } from '../core/mesh-observer';

type Picker = grpc.experimental.Picker;
type PickArgs = grpc.experimental.PickArgs;
type PickResult = grpc.experimental.PickResult;
type LeafLoadBalancer = grpc.experimental.LeafLoadBalancer;
const { PickResultType } = grpc.experimental;

/** A failure that came back fast (refused, reset) counts as at least this slow. */
const FAILURE_PENALTY_MS = 250;
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
        const now = performance.now();
        if (code === grpc.status.UNAVAILABLE) load.end(token, now, FAILURE_PENALTY_MS, true, false);
        else if (code === grpc.status.RESOURCE_EXHAUSTED) load.end(token, now, FAILURE_PENALTY_MS);
        else if (code === grpc.status.CANCELLED || code === grpc.status.DEADLINE_EXCEEDED) load.end(token, now, NO_ANSWER_PENALTY_MS, false, false);
        else load.end(token, now);
        // Only a call that started counts, once (grpc-js may end one that never started on the subchannel).
        if (token !== 0) {
          host.outstandingTotal--;
          token = 0;
        }
        observer?.outstanding?.(load.addr, -1);
        ended?.(code, details, metadata);
      },
    };
  }
}
