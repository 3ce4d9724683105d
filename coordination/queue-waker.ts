import { sleep } from './lock-wait';

/**
 * Counts wake-ups; wait(seen) returns once the count passed `seen`, or after
 * `ms`. Counting (not a one-shot flag) is what lets a consumer look, then
 * wait, without missing a wake-up that came between the two.
 */
export class Waker {
  count = 0;
  private waiters: (() => void)[] = [];

  wake(): void {
    this.count++;
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  async wait(seen: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.count !== seen) return;
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const waiter = () => ac.abort('woken');
    this.waiters.push(waiter);
    try {
      await sleep(ms, ac.signal);
    } catch {
      if (signal?.aborted) throw signal.reason;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.waiters = this.waiters.filter((w) => w !== waiter);
    }
  }
}
