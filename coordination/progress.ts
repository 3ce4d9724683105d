import { EventEmitter } from 'node:events';
import type { Etcd3, IKeyValue } from 'etcd3';
import { componentLogger, type Logger } from '../core/logger';
import { ListWatch, isDelete } from '../core/list-watch';

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
export interface ProgressWatchEvents {
  progress: [update: ProgressUpdate];
  removed: [revision: string];
  invalid: [write: { revision: string; value: string }];
}

export class ProgressWatch extends EventEmitter<ProgressWatchEvents> {
  /** The watched key, byte for byte. */
  readonly keyBytes: Buffer;
  /** The key for display and logs. */
  readonly key: string;
  private readonly shownJob: string;
  private readonly log: Logger;
  private readonly lw: ListWatch;
  private lastRevision = 0n;
  private closed = false;
  /** Set by the first listing; later ones follow a watch that could not resume. */
  private listed = false;

  constructor(
    client: Etcd3,
    readonly job: string | Buffer,
    opts: { prefix?: string | Buffer; log?: Logger } = {},
  ) {
    super();
    this.keyBytes = progressKeyBytes(job, opts.prefix);
    this.key = this.keyBytes.toString();
    this.shownJob = job.toString();
    this.log = opts.log ?? componentLogger('progress', { job: this.shownJob, key: this.key });
    // One key: an empty range end (see ResumableWatch).
    this.lw = new ListWatch(client, { start: this.keyBytes, end: Buffer.alloc(0) }, this.log, { what: 'progress' });
    this.lw.on('list', (kvs, _revision, reason) => {
      if (this.listed) {
        this.log.warn({ event: 'progress.compacted', err: reason }, 'history compacted while resuming; re-reading the current value (intermediate values are lost)');
      }
      // Report the listed value only if newer than what was reported: a
      // re-list after a compaction must not repeat the last value.
      this.listed = true;
      const kv = kvs[0];
      if (kv && BigInt(kv.mod_revision) > this.lastRevision) this.report(kv);
    });
    this.lw.on('events', (events) => {
      for (const ev of events) {
        // A listener may close() us mid-batch.
        if (this.closed) return;
        if (isDelete(ev)) {
          this.lastRevision = BigInt(ev.kv.mod_revision);
          this.emit('removed', ev.kv.mod_revision);
        } else this.report(ev.kv);
      }
    });
  }

  start(): this {
    if (!this.closed) this.lw.start();
    return this;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.lw.close();
    this.removeAllListeners();
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
