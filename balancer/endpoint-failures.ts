/**
 * How one backend's attempts have ended lately, as failures and successes
 * (failure-codes.ts decides which is which): counts decayed by wall time,
 * as EndpointLoad's mean is, so the rate follows what the backend does now
 * and forgets a bad spell after a few `decayMs` however many calls arrive.
 * Pure bookkeeping on a clock passed in.
 *
 * Contracts:
 * - `rate()` is failures / attempts over the decayed window, undefined before
 *   any attempt; `volume()` is how many attempts it stands on (decayed), so
 *   callers can ask for evidence before acting on it.
 * - Attempts that were never answered for a reason that is not the
 *   backend's (a hedge cancelled because another backend answered first)
 *   are not recorded at all: they are neither success nor failure.
 * - `last` is the most recent recorded outcome and when it came: a backend
 *   ejected for failures is let back in on its probe's outcome.
 * - `consecutive` counts the failures since its last success: a backend
 *   that breaks all at once shows it in a few calls, long before a rate
 *   over a window full of its earlier successes does.
 */
export class EndpointFailures {
  private attempts = 0;
  private failures = 0;
  private at = 0;
  /** The most recent recorded attempt: when it ended and whether it failed. */
  last: { at: number; failed: boolean } | undefined;
  /** Failures recorded since the last success (or reset). */
  consecutive = 0;

  constructor(private readonly decayMs = 1_000) {}

  /** One attempt ended at `now`, failed or not. */
  record(failed: boolean, now: number): void {
    const w = this.weight(now);
    this.attempts = this.attempts * w + 1;
    this.failures = this.failures * w + (failed ? 1 : 0);
    this.at = Math.max(this.at, now);
    this.last = { at: now, failed };
    this.consecutive = failed ? this.consecutive + 1 : 0;
  }

  /** Decayed attempt count at `now`. */
  volume(now: number): number {
    return this.attempts * this.weight(now);
  }

  /** Decayed failure count at `now`. */
  failed(now: number): number {
    return this.failures * this.weight(now);
  }

  /** Failures / attempts (the decay cancels out); undefined before any attempt. */
  rate(): number | undefined {
    return this.attempts > 0 ? this.failures / this.attempts : undefined;
  }

  /** Forget everything: a backend let back in, or reconnected, is judged afresh. */
  reset(): void {
    this.attempts = 0;
    this.failures = 0;
    this.last = undefined;
    this.consecutive = 0;
  }

  private weight(now: number): number {
    return this.attempts === 0 ? 0 : Math.exp(-Math.max(0, now - this.at) / this.decayMs);
  }
}
