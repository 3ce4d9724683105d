import { meshObserver } from '../core/mesh-observer';

/**
 * A retry budget in Linkerd's (and Finagle's) form: extra attempts (hedges
 * and retries) may add at most `ratio` of the calls made over the last
 * `windowMs`, plus a reserve of `minPerSecond` x window seconds so a client
 * with little traffic can still retry (and a burst of failures when a
 * backend is SIGKILLed is absorbed). When the budget is spent, calls simply
 * run on their first attempt: a brownout of every backend is never
 * multiplied into more load.
 *
 * Counting is per second bucket over the window, O(1) per call.
 */
export interface RetryBudgetOptions {
  /** Extra attempts allowed per call made, over the window. Default 0.2. */
  ratio?: number;
  /** Extra attempts always allowed per second of window. Default 10. */
  minPerSecond?: number;
  /** Window, ms. Default 10,000. */
  windowMs?: number;
}

const BUCKET_MS = 1_000;

export class RetryBudget {
  readonly ratio: number;
  readonly minPerSecond: number;
  readonly windowMs: number;
  private readonly calls: number[];
  private readonly extras: number[];
  private bucketStart = 0;
  private head = 0;
  private callSum = 0;
  private extraSum = 0;
  /** Extra attempts refused so far (for figures and logs). */
  refused = 0;

  constructor(
    opts: RetryBudgetOptions = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.ratio = opts.ratio ?? 0.2;
    this.minPerSecond = opts.minPerSecond ?? 10;
    this.windowMs = opts.windowMs ?? 10_000;
    const n = Math.max(1, Math.ceil(this.windowMs / BUCKET_MS));
    this.calls = new Array<number>(n).fill(0);
    this.extras = new Array<number>(n).fill(0);
    this.bucketStart = this.now();
  }

  /** A call (first attempt) was made. */
  deposit(): void {
    this.advance();
    this.calls[this.head]++;
    this.callSum++;
  }

  /** May one more attempt be sent? If so it is counted. */
  withdraw(): boolean {
    this.advance();
    const allowed = this.ratio * this.callSum + (this.minPerSecond * this.windowMs) / 1000;
    if (this.extraSum + 1 > allowed) {
      this.refused++;
      meshObserver()?.budgetRefused?.();
      return false;
    }
    this.extras[this.head]++;
    this.extraSum++;
    return true;
  }

  /** Extra attempts spent in the current window. */
  get spent(): number {
    this.advance();
    return this.extraSum;
  }

  private advance(): void {
    const t = this.now();
    let steps = Math.floor((t - this.bucketStart) / BUCKET_MS);
    if (steps <= 0) return;
    this.bucketStart += steps * BUCKET_MS;
    steps = Math.min(steps, this.calls.length);
    for (let i = 0; i < steps; i++) {
      this.head = (this.head + 1) % this.calls.length;
      this.callSum -= this.calls[this.head];
      this.extraSum -= this.extras[this.head];
      this.calls[this.head] = 0;
      this.extras[this.head] = 0;
    }
  }
}
