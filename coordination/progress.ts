import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { Backoff } from '../core/backoff';
import { componentLogger, type Logger } from '../core/logger';
import { errorText } from '../core/etcd-errors';
import { ResumableWatch } from '../core/resumable-watch';

/**
 * Distributed notification (the seed's "分布式通知与协调"): a job reports its
 * progress in one key, `<prefix>/<job>` (default prefix `progress`), as a
 * decimal integer 0..100 (`etcdctl put progress/build 42` works too), and any
 * number of watchers react to every change. 100 means done.
 */

export const DEFAULT_PROGRESS_PREFIX = 'progress';
export const DONE_PERCENT = 100;

/** The key a job's progress lives in. */
export function progressKey(job: string, prefix = DEFAULT_PROGRESS_PREFIX): string {
  return progressKeyBytes(job, prefix).toString();
}

/**
 * progressKey in bytes: a job or prefix given as a Buffer is used as is (it
 * need not be UTF-8; `mesh progress` passes the raw argv bytes), a string as
 * its UTF-8. Trailing `/` of the prefix are dropped.
 */
export function progressKeyBytes(job: string | Buffer, prefix: string | Buffer = DEFAULT_PROGRESS_PREFIX): Buffer {
  const j = Buffer.from(job);
  if (j.length === 0) throw new RangeError('job must not be empty');
  const p = Buffer.from(prefix);
  let end = p.length;
  while (end > 0 && p[end - 1] === 0x2f) end--;
  return Buffer.concat([p.subarray(0, end), Buffer.from('/'), j]);
}

export function isPercent(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= DONE_PERCENT;
}

/** Parse a stored value; undefined when it is not an integer 0..100 (surrounding whitespace allowed). */
export function decodePercent(value: Buffer | string): number | undefined {
  const text = (typeof value === 'string' ? value : value.toString('utf8')).trim();
  if (!/^\d{1,3}$/.test(text)) return undefined;
  const n = Number(text);
  return isPercent(n) ? n : undefined;
}

/** Report progress; resolves with the revision of the write. */
export async function setProgress(client: Etcd3, job: string | Buffer, percent: number, opts: { prefix?: string | Buffer } = {}): Promise<string> {
  if (!isPercent(percent)) throw new RangeError(`percent must be an integer 0..${DONE_PERCENT}, got ${percent}`);
  const res = await client.kv.put({ key: progressKeyBytes(job, opts.prefix), value: Buffer.from(String(percent)) });
  return res.header.revision;
}

/** One observed value of a job's progress. */
export interface ProgressUpdate {
  /** The job for display (UTF-8; bytes that are not UTF-8 show as U+FFFD). */
  job: string;
  percent: number;
  /** The revision of the write that set it. */
  revision: string;
}

/**
 * Watches one job. Events:
 * - `progress(ProgressUpdate)`: the value at start (if the key exists), then
 *   every write, in order, including writes of an unchanged value;
 * - `removed(revision)`: the key was deleted (the watch goes on);
 * - `invalid({ revision, value })`: a write that is not 0..100 (also logged).
 * Only the latest value matters here, so when etcd has compacted the history
 * a resume needs, the watcher re-reads the key and goes on (intermediate
 * values lost to compaction are not replayed; the log says so).
 * A failed read is logged and retried with backoff. No event after close().
 */
export class ProgressWatch extends EventEmitter {
  /** The watched key, byte for byte. */
  readonly keyBytes: Buffer;
  /** The key for display and logs. */
  readonly key: string;
  private readonly shownJob: string;
  private readonly log: Logger;
  private readonly backoff = new Backoff(100, 1_000);
  private watch: ResumableWatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastRevision = 0n;
  private closed = false;
  private started = false;

  constructor(
    private readonly client: Etcd3,
    readonly job: string | Buffer,
    opts: { prefix?: string | Buffer; log?: Logger } = {},
  ) {
    super();
    this.keyBytes = progressKeyBytes(job, opts.prefix);
    this.key = this.keyBytes.toString();
    this.shownJob = job.toString();
    this.log = opts.log ?? componentLogger('progress', { job: this.shownJob, key: this.key });
  }

  start(): this {
    if (!this.started && !this.closed) {
      this.started = true;
      void this.list('start');
    }
    return this;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.watch?.close();
    this.watch = undefined;
    this.removeAllListeners();
  }

  /** Read the key, report it if newer than what we reported, then watch from the read's revision + 1. */
  private async list(reason: string): Promise<void> {
    this.watch?.close();
    this.watch = undefined;
    let res;
    try {
      res = await this.client.kv.range({ key: this.keyBytes });
    } catch (err) {
      if (this.closed) return;
      const delay = this.backoff.next();
      this.log.warn({ event: 'progress.read_failed', err: errorText(err), retryInMs: delay }, `reading ${this.key} failed; retrying`);
      this.timer = setTimeout(() => void this.list('retry'), delay);
      return;
    }
    if (this.closed) return;
    this.backoff.reset();
    const kv = res.kvs[0];
    if (kv && BigInt(kv.mod_revision) > this.lastRevision) this.report(kv);
    const from = BigInt(res.header.revision) + 1n;
    this.log.debug({ event: 'progress.watching', reason, fromRevision: from.toString() }, `watching ${this.key}`);
    const w = new ResumableWatch(this.client, { start: this.keyBytes, end: Buffer.alloc(0) }, from, this.log);
    this.watch = w;
    w.on('batch', (events: IEvent[]) => {
      for (const ev of events) {
        if (this.closed || this.watch !== w) return;
        if (ev.type === 'Put') this.report(ev.kv);
        else {
          this.lastRevision = BigInt(ev.kv.mod_revision);
          this.emit('removed', ev.kv.mod_revision);
        }
      }
    });
    w.on('error', (err: Error) => {
      if (this.closed || this.watch !== w) return;
      this.log.warn({ event: 'progress.compacted', err: errorText(err) }, 'history compacted while resuming; re-reading the current value (intermediate values are lost)');
      void this.list('compacted');
    });
    w.start();
  }

  private report(kv: IKeyValue): void {
    this.lastRevision = BigInt(kv.mod_revision);
    const percent = decodePercent(kv.value);
    if (percent === undefined) {
      const value = kv.value.toString('utf8').slice(0, 100);
      this.log.warn({ event: 'progress.invalid', key: this.key, value, revision: kv.mod_revision }, `ignoring ${this.key}=${JSON.stringify(value)}: not an integer 0..100`);
      this.emit('invalid', { revision: kv.mod_revision, value });
      return;
    }
    this.emit('progress', { job: this.shownJob, percent, revision: kv.mod_revision } satisfies ProgressUpdate);
  }
}
