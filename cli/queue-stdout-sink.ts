import { fstatSync } from 'node:fs';
import type { Delivery } from '../coordination/queue';
import type { Logger } from '../core/logger';
import { errorText } from '../core/etcd-errors';
import type { SignalRelay } from './signal-relay';
import { DrainProbe } from './queue-drain-probe';
import { EXIT_MULTILINE_ITEM, EXIT_READER_GONE, type Handled } from './queue-handled';

/** How long a signal waits for the probe's answer (it polls every 1-20 ms). */
const LATE_DRAIN_MS = 100;

/**
 * Stdout mode. Writing into a pipe only puts the item in the kernel's pipe
 * buffer (64 KiB), which a reader that dies never reads: acknowledging on
 * write would lose a pipe-full. So after writing, we wait until the reader
 * has taken every byte out (FIONREAD on a pipe, SIOCOUTQ on a socket, asked
 * by a small perl helper that shares our stdout; Node has no ioctl), or until
 * the reader is gone (POLLERR/POLLHUP): only then is the item acknowledged,
 * or given back. A file or terminal takes the item on write.
 */
export class StdoutSink {
  private failed: NodeJS.ErrnoException | undefined;
  private readonly onError = (err: NodeJS.ErrnoException) => (this.failed = err);
  private readonly saved: ((...args: unknown[]) => void)[];

  private constructor(
    private readonly drain: DrainProbe | undefined,
    private readonly log: Logger,
  ) {
    // main.ts exits 0 on EPIPE; here EPIPE means "give the item back first".
    this.saved = process.stdout.listeners('error') as ((...args: unknown[]) => void)[];
    process.stdout.removeAllListeners('error');
    process.stdout.on('error', this.onError);
  }

  static open(log: Logger): StdoutSink {
    let kind: 'pipe' | 'socket' | undefined;
    try {
      const st = fstatSync(1);
      kind = st.isFIFO() ? 'pipe' : st.isSocket() ? 'socket' : undefined;
    } catch {
      kind = undefined;
    }
    return new StdoutSink(kind ? DrainProbe.start(kind, log) : undefined, log);
  }

  async deliver(d: Delivery, signals: SignalRelay): Promise<Handled> {
    if (d.bytes.includes(0x0a) || d.bytes.includes(0x0d)) {
      process.stderr.write(`mesh: item ${d.key} contains a line break; stdout mode prints one item per line: pop it with -- CMD\n`);
      return { ack: false, code: EXIT_MULTILINE_ITEM, why: 'item contains a line break' };
    }
    const err = this.failed ?? (await new Promise<Error | null | undefined>((resolve) => process.stdout.write(Buffer.concat([d.bytes, Buffer.from('\n')]), resolve)));
    if (err) return this.gone(err);
    if (!this.drain) return { ack: true };
    const drained = this.drain.wait();
    let got = await Promise.race([drained, signals.next().then(() => 'signal' as const)]);
    if (got === 'signal') {
      // The reader may have taken the item just before the signal (a reader
      // that reads a line and then stops us): the probe polls every few ms,
      // so let it answer before giving back an item that was read.
      got = await Promise.race([drained, new Promise<'signal'>((resolve) => setTimeout(() => resolve('signal'), LATE_DRAIN_MS))]);
    }
    if (got === 'drained') return { ack: true };
    if (got === 'signal') return { ack: false, why: 'signal before the reader had read the item' };
    return this.gone(new Error('reader closed the pipe without reading the item'));
  }

  private gone(err: Error): Handled {
    this.log.warn({ event: 'queue.reader_gone', err: errorText(err) }, 'the reader of stdout went away: giving the item back');
    return { ack: false, code: EXIT_READER_GONE, why: 'reader of stdout went away' };
  }

  close(): void {
    this.drain?.close();
    process.stdout.off('error', this.onError);
    for (const l of this.saved) process.stdout.on('error', l);
  }
}
