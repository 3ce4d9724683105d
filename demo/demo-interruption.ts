/** The demo was stopped (signal) before a step finished; not a failure of the step. */
export class DemoInterrupted extends Error {
  constructor(readonly reason: string) {
    super(`demo interrupted (${reason})`);
  }
}

/**
 * The demo's abort signal (Ctrl-C and friends) as what every wait of the
 * scenario races: once it aborts, until() gives up at once with
 * DemoInterrupted, whatever the wait was (etcd's start, a greeter's, a
 * step). `onAbort` runs first, synchronously, when it aborts.
 */
export class DemoInterruption {
  private readonly interrupted: Promise<never>;

  constructor(
    private readonly signal: AbortSignal | undefined,
    onAbort: () => void,
  ) {
    // Settles only by rejecting, when the signal aborts.
    this.interrupted = new Promise<never>((_, reject) => {
      const abort = () => {
        onAbort();
        reject(new DemoInterrupted(this.reason));
      };
      if (signal?.aborted) abort();
      else signal?.addEventListener('abort', abort, { once: true });
    });
    this.interrupted.catch(() => undefined);
  }

  get aborted(): boolean {
    return Boolean(this.signal?.aborted);
  }

  /** Why it was aborted (a signal name), as reported. */
  get reason(): string {
    return this.reasonOr('aborted');
  }

  /** The abort's reason, or `fallback` when there is none (an interruption by cleanup alone). */
  reasonOr(fallback: string): string {
    return String(this.signal?.reason ?? fallback);
  }

  /** `p`, unless the demo is interrupted first (then DemoInterrupted; `p` is left to settle unobserved). */
  until<T>(p: Promise<T>): Promise<T> {
    p.catch(() => undefined);
    return Promise.race([p, this.interrupted]);
  }

  /** Throw DemoInterrupted if the signal has aborted. */
  check(): void {
    if (this.aborted) throw new DemoInterrupted(this.reason);
  }
}
