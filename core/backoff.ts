/**
 * Exponential backoff with full jitter ("Full Jitter", AWS Architecture
 * Blog, "Exponential Backoff And Jitter"): each delay is uniform in
 * [0, min(maxMs, initialMs x 2^attempt)]. Jitter keeps a fleet of servers
 * that lost etcd together from retrying in lock-step when it comes back;
 * full jitter spreads them over the whole interval, not only its upper half.
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
  ) {}

  /** Delay before the next attempt, ms. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(Math.random() * ceiling);
  }

  reset(): void {
    this.attempt = 0;
  }
}
