/**
 * What one backend's calls have shown this client: a peak EWMA of latency
 * (Finagle/Linkerd "peak EWMA": a slower sample replaces the average at
 * once, faster ones pull it down with a time-based decay) and the calls
 * outstanding on it, with the age of the oldest. Pure bookkeeping: the
 * clock is passed in, nothing here touches grpc-js, so the pick math is
 * unit-tested without a network.
 *
 * Contracts:
 * - `latencyMs()` is never below the age of the oldest outstanding call, so
 *   a backend that stopped answering (SIGSTOP, TCP still open) looks slower
 *   with every millisecond, before any call on it completes.
 * - Before its first sample a backend has no latency of its own; callers
 *   pass a neutral value (the median of its peers), so a new backend is
 *   neither starved nor flooded.
 * - The decay is by wall time (`decayMs`), not by sample count: an average
 *   forgets a spike after a few `decayMs` however many calls arrive.
 */
export class EndpointLoad {
  private ewma: number | undefined;
  private mean: number | undefined;
  /** How many samples the mean stands on: each sample counts 1, decayed as the mean's weights are. */
  private meanSamples = 0;
  private lastSampleAt = 0;
  /** When the backend last answered a call (any status it sent), and whether calls were sent to it since. */
  private lastAnswerAt = 0;
  private sentSinceAnswer = false;
  private readonly inFlight = new Map<number, number>();
  private nextToken = 1;

  constructor(
    readonly addr: string,
    public weight: number,
    private readonly decayMs = 500,
  ) {}

  /** Calls started on this backend and not yet ended. */
  get outstanding(): number {
    return this.inFlight.size;
  }

  /** True once a call on it has ended. */
  get measured(): boolean {
    return this.ewma !== undefined;
  }

  /** A call started at `now`; returns the token to end it with. */
  start(now: number): number {
    const token = this.nextToken++;
    this.inFlight.set(token, now);
    if (!this.sentSinceAnswer) {
      this.sentSinceAnswer = true;
      // An idle backend's silence starts with the first unanswered call, not at its last answer long ago.
      if (this.inFlight.size === 1) this.lastAnswerAt = Math.max(this.lastAnswerAt, now);
    }
    return token;
  }

  /**
   * The call `token` ended at `now`. `penaltyMs` raises the sample for a call
   * that failed or never answered (a refused connection, a hedged attempt
   * cancelled because another backend answered first): for the mean that
   * ejection looks at, always; for the peak EWMA that picking looks at, only
   * when `penalisePeak` (one lost hedge race must not make a healthy backend
   * look slow for seconds). Ending a token twice is a no-op.
   */
  end(token: number, now: number, penaltyMs = 0, penalisePeak = true, answered = true): void {
    const started = this.inFlight.get(token);
    if (started === undefined) return;
    this.inFlight.delete(token);
    if (answered) {
      this.lastAnswerAt = now;
      this.sentSinceAnswer = this.inFlight.size > 0;
    }
    const elapsed = now - started;
    this.observe(penalisePeak ? Math.max(elapsed, penaltyMs) : elapsed, now, Math.max(elapsed, penaltyMs));
  }

  /**
   * The call `token` ended at `now` without a latency sample: it failed in a
   * way the failure count books (endpoint-failures.ts), and its duration
   * says nothing about how fast the backend serves. `answered` as in end().
   */
  endUnmeasured(token: number, now: number, answered: boolean): void {
    if (!this.inFlight.has(token)) return;
    this.inFlight.delete(token);
    if (answered) {
      this.lastAnswerAt = now;
      this.sentSinceAnswer = this.inFlight.size > 0;
    }
  }

  /**
   * True when the backend has answered nothing since call `token` started
   * (a DEADLINE_EXCEEDED then is the backend's stall, not a tight deadline);
   * false for an unknown token.
   */
  unansweredSince(token: number): boolean {
    const started = this.inFlight.get(token);
    return started !== undefined && this.lastAnswerAt <= started;
  }

  /** Fold one latency sample (ms) taken at `now` into the peak EWMA and (as `meanSampleMs`, default the same) the mean. */
  observe(sampleMs: number, now: number, meanSampleMs = sampleMs): void {
    const s = Math.max(0, sampleMs);
    const w = this.mean === undefined ? 0 : Math.exp(-Math.max(0, now - this.lastSampleAt) / this.decayMs);
    const m = Math.max(0, meanSampleMs);
    this.mean = (this.mean ?? m) * w + m * (1 - w);
    this.meanSamples = this.meanSamples * w + 1;
    this.ewma = this.ewma === undefined || s > this.ewma ? s : this.ewma * w + s * (1 - w);
    this.lastSampleAt = now;
  }

  /** Forget the peak: a backend re-admitted after it recovered is judged on its recent mean, not on its worst call. */
  forgetPeak(): void {
    if (this.mean !== undefined) this.ewma = this.mean;
  }

  /** Age of the oldest outstanding call at `now`, ms (0 when none). */
  oldestAgeMs(now: number): number {
    for (const started of this.inFlight.values()) return now - started; // Map keeps insertion order: first is oldest
    return 0;
  }

  /**
   * How long the backend has been silent at `now`: time since its last answer
   * while calls sent to it are unanswered (cancelled hedges included), ms; 0
   * when nothing awaits an answer. A hung backend's silence grows without
   * bound even though hedging cancels each call stuck on it; a busy healthy
   * one answers every few ms whatever its latency.
   */
  stallMs(now: number): number {
    return this.sentSinceAnswer ? Math.max(0, now - this.lastAnswerAt) : 0;
  }

  /**
   * Latency estimate at `now` for picking: the peak EWMA, never below the
   * oldest call's age or the silence. Without a sample it is `neutralMs`;
   * without a recent one, the peak relaxes towards `neutralMs` with time
   * (decayMs), so a backend the picker stopped choosing is tried again and
   * measured, never starved for good.
   */
  latencyMs(now: number, neutralMs: number, ignorePeak = false): number {
    let est = neutralMs;
    if (this.ewma !== undefined && !ignorePeak) est = this.ewma <= neutralMs ? this.ewma : neutralMs + (this.ewma - neutralMs) * Math.exp(-Math.max(0, now - this.lastSampleAt) / this.decayMs);
    return Math.max(est, this.oldestAgeMs(now), this.stallMs(now));
  }

  /**
   * How many samples the time-decayed mean stands on (each decayed with the
   * mean's own weights): about rate x decayMs for a steady rate. A backend
   * that gets a few calls a second (one of a thousand) has a mean of one or
   * two calls, which a single GC pause can make look slow.
   */
  get meanSampleCount(): number {
    return this.meanSamples;
  }

  /**
   * Latency estimate at `now` for ejection: the plain time-decayed mean (one
   * slow call among hundreds barely moves it; a backend slow for a fraction
   * of every second does), never below the oldest call's age. Undefined before any sample.
   */
  meanLatencyMs(now: number): number | undefined {
    if (this.mean === undefined) return this.inFlight.size > 0 ? this.oldestAgeMs(now) : undefined;
    return Math.max(this.mean, this.oldestAgeMs(now));
  }

  /**
   * Expected cost of one more call here: latency x relative overload, where
   * overload = (outstanding + 1) / (fairOutstanding + 1), at least 1, and
   * `fairOutstanding` is this backend's weight's share of all calls in
   * flight. Lower is better. A backend carrying no more than its share costs
   * its latency; one holding more calls than its share (a queue building up)
   * costs proportionally more. So equal backends, and weighted ones, are
   * never pulled off their weights by a momentary count (one call more on a
   * light backend), while a stuck or overloaded one is. `ignorePeak`
   * prices it at `neutralMs` (age and silence still count): for a newcomer
   * whose first calls are slow only because its process is cold.
   */
  cost(now: number, neutralMs: number, fairOutstanding: number, ignorePeak = false): number {
    return this.latencyMs(now, neutralMs, ignorePeak) * Math.max(1, (this.outstanding + 1) / (fairOutstanding + 1));
  }
}
