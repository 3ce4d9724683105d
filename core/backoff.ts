/**
 * Exponential backoff with full jitter between `initialMs` and `maxMs`.
 * Jitter keeps a fleet of servers that lost etcd together from retrying in
 * lock-step when it comes back.
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
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
