import type { ServiceError } from '@grpc/grpc-js';
import { status as grpcStatus } from '@grpc/grpc-js';
import { backendOf, sayHello, type GreeterClient } from '../services/greeter-client';

/**
 * A load like services/load-generator's runLoad, on the same client, but
 * timestamping every reply per backend: the join and leave measurements need
 * "first reply from X after t0" and "last reply from X". With `ratePerSecond`
 * > 0 the calls are paced (each of the `concurrency` workers waits for its
 * next slot), so the client is not CPU-bound and the figures are the mesh's,
 * not the queueing of a saturated event loop; 0 makes it closed-loop.
 * Bounded: it stops by itself after `maxMs` even if stop() is never called.
 */
export class TrafficLoop {
  readonly firstReplyAt = new Map<string, number>();
  readonly lastReplyAt = new Map<string, number>();
  /** When the call behind each backend's last reply was started (routing happens at or after this). */
  readonly lastReplyStartedAt = new Map<string, number>();
  readonly counts = new Map<string, number>();
  readonly errors: Record<string, number> = {};
  ok = 0;
  failed = 0;
  private stopped = false;
  private workers: Promise<void>[] = [];
  private readonly waiters = new Map<string, Array<(t: number) => void>>();
  private readonly hardEnd: number;

  constructor(
    private readonly client: GreeterClient,
    private readonly concurrency: number,
    private readonly deadlineMs: number,
    maxMs: number,
    private readonly ratePerSecond = 0,
  ) {
    this.hardEnd = performance.now() + maxMs;
  }

  start(): this {
    this.workers = Array.from({ length: this.concurrency }, () => this.worker());
    return this;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
  }

  /** How many calls have failed since this was called: a stage's own failures on the loop it shares with other stages. */
  failedFromNow(): () => number {
    const before = this.failed;
    return () => this.failed - before;
  }

  /** Resolves with the time of the first reply from `addr` (now or later), or undefined after `timeoutMs`. */
  firstReplyFrom(addr: string, timeoutMs: number): Promise<number | undefined> {
    const seen = this.firstReplyAt.get(addr);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const list = this.waiters.get(addr) ?? [];
      const timer = setTimeout(() => {
        const l = this.waiters.get(addr);
        if (l) l.splice(l.indexOf(done), 1);
        resolve(undefined);
      }, timeoutMs);
      const done = (t: number) => {
        clearTimeout(timer);
        resolve(t);
      };
      list.push(done);
      this.waiters.set(addr, list);
    });
  }

  private async worker(): Promise<void> {
    const interval = this.ratePerSecond > 0 ? (1000 * this.concurrency) / this.ratePerSecond : 0;
    // Spread the workers' slots over one interval.
    let next = performance.now() + Math.random() * interval;
    while (!this.stopped && performance.now() < this.hardEnd) {
      if (interval > 0) {
        const wait = next - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        // A late worker does not burst to catch up.
        next = Math.max(next + interval, performance.now());
        if (this.stopped) break;
      }
      const started = performance.now();
      try {
        const reply = await sayHello(this.client, 'bench', this.deadlineMs);
        const t = performance.now();
        const b = backendOf(reply);
        this.ok++;
        this.counts.set(b, (this.counts.get(b) ?? 0) + 1);
        this.lastReplyAt.set(b, t);
        this.lastReplyStartedAt.set(b, started);
        if (!this.firstReplyAt.has(b)) {
          this.firstReplyAt.set(b, t);
          const w = this.waiters.get(b);
          if (w) {
            this.waiters.delete(b);
            for (const f of w) f(t);
          }
        }
      } catch (err) {
        this.failed++;
        const code = grpcStatus[(err as ServiceError).code ?? grpcStatus.UNKNOWN] ?? 'UNKNOWN';
        this.errors[code] = (this.errors[code] ?? 0) + 1;
      }
    }
  }
}
