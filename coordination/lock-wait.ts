import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, IKeyValue, Watcher } from 'etcd3';
import type { Logger } from '../core/logger';
import { ResumableWatch } from '../core/resumable-watch';

/**
 * The waiting primitives of Go's `client/v3/concurrency` (wait.go), shared by
 * the lock and the election, plus a guard on one's own key.
 *
 * Revisions are int64 in etcd; they travel as decimal strings (as etcd3 gives
 * them) and are compared as BigInt, never through a double.
 *
 * Both watch through ResumableWatch, not etcd3's own reconnect, which can
 * resume past a catch-up event after a dropped stream: a missed delete here
 * would leave a waiter waiting forever, or a holder unaware of its loss.
 */

/** A watch on exactly one key from `from`, resumed from its last event across drops. */
export function watchKey(client: Etcd3, key: string, from: string, log?: Logger): ResumableWatch {
  return new ResumableWatch(client, { start: Buffer.from(key), end: Buffer.alloc(0) }, BigInt(from), log);
}

/** The first event of `type` in a batch, if any (etcd3 types say 'Delete', the wire says 'DELETE'). */
export function eventOfType(events: IEvent[], type: 'put' | 'delete'): IEvent | undefined {
  return events.find((ev) => String(ev.type).toLowerCase() === type);
}

function deletion(events: IEvent[]): IEvent | undefined {
  return eventOfType(events, 'delete');
}

/** Pause between re-checks after a watch was cancelled by etcd (compaction). */
const RECHECK_MS = 100;

/**
 * Resolve once `key` is deleted at a revision after `rev` (the revision at
 * which the caller saw it exist). Rejects with `signal.reason` on abort. A
 * watch that etcd cancels (e.g. its start revision was compacted) is not an
 * error: we look at the key again and, if it is still there, watch anew.
 */
export async function waitDelete(client: Etcd3, key: string, rev: string, signal?: AbortSignal): Promise<void> {
  let from = rev;
  for (;;) {
    signal?.throwIfAborted();
    const watch = watchKey(client, key, from);
    let onAbort: (() => void) | undefined;
    const outcome = await new Promise<'deleted' | 'cancelled' | 'aborted'>((resolve) => {
      watch.on('batch', (events: IEvent[]) => deletion(events) && resolve('deleted'));
      watch.once('error', () => resolve('cancelled'));
      onAbort = () => resolve('aborted');
      signal?.addEventListener('abort', onAbort, { once: true });
      watch.start();
    });
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    watch.close();
    if (outcome === 'deleted') return;
    if (outcome === 'aborted') throw signal!.reason;
    await sleep(RECHECK_MS, signal);
    const now = await client.get(key).exec();
    if (now.kvs.length === 0) return;
    from = now.header.revision;
  }
}

/**
 * Go's `waitDeletes`: wait until no key under `prefix` has a create revision
 * of `maxCreateRev` or less. Each round waits only for the newest such key
 * (the one just ahead of us), so releasing a lock wakes one waiter, not all.
 * Returns the header revision at which the condition held.
 */
export async function waitDeletes(
  client: Etcd3,
  prefix: string,
  maxCreateRev: bigint,
  signal?: AbortSignal,
  onWait?: (kv: IKeyValue) => void,
): Promise<string> {
  for (;;) {
    signal?.throwIfAborted();
    const res = await client.getAll().prefix(prefix).maxCreateRevision(maxCreateRev.toString()).sort('Create', 'Descend').limit(1).exec();
    if (res.kvs.length === 0) return res.header.revision;
    onWait?.(res.kvs[0]);
    await waitDelete(client, res.kvs[0].key.toString(), res.header.revision, signal);
  }
}

/**
 * Watches one key we own and emits `gone` once if it is deleted (by lease
 * expiry, by hand, by anyone). Starts from a revision at which the key was
 * known to exist, so a deletion between writing it and watching it is not
 * missed. Compaction-cancelled watches are re-armed after a fresh read.
 */
export class KeyGuard extends EventEmitter<{ gone: [reason: string] }> {
  private watch: ResumableWatch | undefined;
  private closed = false;
  private fired = false;

  constructor(
    private readonly client: Etcd3,
    readonly key: string,
    fromRevision: string,
    private readonly log: Logger,
  ) {
    super();
    this.arm(fromRevision);
  }

  private arm(from: string): void {
    if (this.closed) return;
    const w = watchKey(this.client, this.key, from, this.log);
    this.watch = w;
    w.on('batch', (events: IEvent[]) => {
      const del = deletion(events);
      if (del) this.fire(`key ${this.key} deleted at revision ${del.kv.mod_revision}`);
    });
    w.once('error', (err: Error) => {
      if (this.closed) return;
      this.log.warn({ event: 'guard.watch_cancelled', key: this.key, err: String(err) }, 'own-key watch cannot resume; re-reading the key');
      w.close();
      void this.recheck();
    });
    w.start();
  }

  private async recheck(): Promise<void> {
    for (let attempt = 0; !this.closed && !this.fired; attempt++) {
      try {
        const res = await this.client.get(this.key).exec();
        if (res.kvs.length === 0) return this.fire(`key ${this.key} is gone`);
        return this.arm(res.header.revision);
      } catch (err) {
        // etcd unreachable: the session's own expiry check covers the lease;
        // keep trying to re-arm so a deletion by hand is still noticed.
        await sleep(Math.min(1000, RECHECK_MS * 2 ** attempt));
      }
    }
  }

  private fire(reason: string): void {
    if (this.closed || this.fired) return;
    this.fired = true;
    this.emit('gone', reason);
  }

  /** Stop watching; no `gone` after this. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    this.watch = undefined;
  }
}

/**
 * Cancel a watcher without ever hanging teardown: etcd3 waits for etcd to
 * confirm the cancel, which never comes while etcd is frozen or cut off.
 * After `ms` we stop waiting (etcd3 drops the watcher on its next reconnect).
 */
export async function cancelWatcher(w: Watcher, ms = 1000): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([w.cancel().catch(() => undefined), new Promise<void>((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
