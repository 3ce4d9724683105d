import type { Logger } from '../core/logger';
import type { RunningCommand } from './command-runner';

/**
 * SIGINT/SIGTERM handling for commands that wait, then run CMD: before CMD
 * runs, a signal aborts the wait (abortSignal); while CMD runs it is
 * forwarded to CMD (a second one is sent as SIGKILL), and the command ends
 * when CMD does, so the lock or leadership is released after CMD stopped.
 */
export class SignalRelay {
  received: NodeJS.Signals | undefined;
  private readonly ac = new AbortController();
  private child: RunningCommand | undefined;
  private forwarded = 0;
  private waiters: ((sig: NodeJS.Signals) => void)[] = [];
  private readonly handler = (sig: NodeJS.Signals) => this.onSignal(sig);

  constructor(private readonly log: Logger) {
    process.on('SIGINT', this.handler);
    process.on('SIGTERM', this.handler);
  }

  get abortSignal(): AbortSignal {
    return this.ac.signal;
  }

  forwardTo(child: RunningCommand | undefined): void {
    this.child = child;
    this.forwarded = 0;
  }

  /** Resolves at the next signal (or at once if one already came and nobody consumed it). */
  next(): Promise<NodeJS.Signals> {
    if (this.received && !this.child) return Promise.resolve(this.received);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  dispose(): void {
    process.off('SIGINT', this.handler);
    process.off('SIGTERM', this.handler);
  }

  private onSignal(sig: NodeJS.Signals): void {
    this.received = sig;
    const child = this.child;
    if (child && !child.done) {
      const send = this.forwarded++ === 0 ? sig : 'SIGKILL';
      this.log.info({ event: 'cli.signal_forwarded', signal: sig, sent: send, pid: child.pid }, `forwarding ${send} to CMD`);
      child.signal(send);
    } else {
      this.log.info({ event: 'cli.signal', signal: sig }, `received ${sig}`);
      this.ac.abort(new Error(`received ${sig}`));
    }
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w(sig);
  }
}
