/**
 * The numbers the `load_aware` policy runs on, each settable in its service
 * config (load-balancer-load-aware-config.ts); picker-load-aware.ts says how
 * a call is chosen, ejection-review.ts when a backend is ejected and let back.
 */
export interface LoadAwareTuning {
  /** The first candidate keeps the call unless its cost is over overrideRatio x the second's. */
  overrideRatio: number;
  /**
   * ...and by at least this many ms: at light load a backend's latency is a
   * millisecond or two, and a pause in its process (GC, a burst of calls
   * queued behind each other) makes it look 3x slower than its peers for a
   * while (its peak EWMA); without a floor those moments took a
   * heavy-weighted backend's calls (1000/100/100 at 500 calls/s open loop:
   * 74-80% where 83.3% is its weight, and 74% with a 15 ms floor: pauses of
   * 20-50 ms happen on a shared 2-core machine; with 50 ms, 83.2-83.3%). A
   * backend slower than that, or stalled, is still passed over at once, and
   * a slow one is ejected by its mean latency (ejection-review.ts).
   */
  overrideMinGapMs: number;
  /** A backend silent (calls unanswered) for longer than max(stallRatio x median, median + stallMinGapMs) is ejected. */
  stallRatio: number;
  stallMinGapMs: number;
  /** An ejected backend with nothing in flight gets one call (a probe) per probeIntervalMs, once its time out allows. */
  probeIntervalMs: number;
  /** Ejected for latency: its mean over ejectRatio x its peers' median, and by ejectMinGapMs. */
  ejectRatio: number;
  ejectMinGapMs: number;
  /** The mean is shrunk towards the median as if this many calls at the median had joined it. */
  ejectPriorSamples: number;
  /** Let back in once its mean is under readmitRatio x the median. */
  readmitRatio: number;
  /** A backend is not ejected for its mean latency during its first warmupMs (a cold process is slow at first); silence still counts. */
  warmupMs: number;
  /**
   * gRPC A50's ejection time: an ejected backend stays out at least
   * baseEjectionMs x its multiplier (at most maxEjectionMs). Each ejection
   * (and each failed probe of a backend ejected for failures) adds one to
   * the multiplier; every ejectionDecayMs spent in the rotation takes one
   * off. A backend that keeps coming back bad stays out longer and longer.
   */
  baseEjectionMs: number;
  maxEjectionMs: number;
  ejectionDecayMs: number;
  /**
   * At most this share of the backends is ejected at once, for any reason:
   * strictly fewer than maxEjectionPercent % of n, but one of two or more
   * (and never the only one). A fleet-wide failure or brownout therefore
   * still spreads the calls. 50: at most ceil(n/2) - 1.
   */
  maxEjectionPercent: number;
  /** Failure rates are counted over a window decaying by wall time with this constant, ms. */
  failureDecayMs: number;
  /** A backend's failure rate is shrunk towards its peers' as if this many attempts at their rate had joined it. */
  failurePriorSamples: number;
  /**
   * Failure rate above the peers' (the better quarter's) over which a backend
   * is ejected. Up to it the backend's weight is scaled by
   * 1 - excess / failureEjectExcess: a backend failing a part of its calls
   * gets less traffic in proportion.
   */
  failureEjectExcess: number;
  /** Decayed attempts a backend's failure rate must stand on before it is ejected for it. */
  failureMinVolume: number;
  /**
   * Failures in a row that eject a backend at once (with healthy peers;
   * more when the peers fail too, see ejection-failures.ts failureRunLimit).
   */
  failureConsecutive: number;
}

export const DEFAULT_TUNING: LoadAwareTuning = {
  overrideRatio: 3,
  overrideMinGapMs: 50,
  stallRatio: 3,
  stallMinGapMs: 100,
  probeIntervalMs: 200,
  ejectRatio: 4,
  ejectMinGapMs: 10,
  ejectPriorSamples: 3,
  readmitRatio: 1.5,
  warmupMs: 1_000,
  baseEjectionMs: 250,
  maxEjectionMs: 5_000,
  ejectionDecayMs: 5_000,
  maxEjectionPercent: 50,
  failureDecayMs: 1_000,
  failurePriorSamples: 5,
  failureEjectExcess: 0.25,
  failureMinVolume: 3,
  failureConsecutive: 5,
};
