/**
 * Typed failures of the watch-based parts (resolver, pub/sub, progress, monitor).
 * They are delivered as values or `error` events, never swallowed.
 */

/**
 * etcd compacted its history past the revision a watch had to resume from,
 * so the changes from `revision` up to the compaction point can no longer be
 * read. A subscriber that promised "no gap" must stop and say so.
 */
export class CompactedError extends Error {
  constructor(
    /** The first revision that could not be read any more. */
    readonly revision: string,
  ) {
    super(`etcd has compacted its history past revision ${revision}: changes from revision ${revision} on can no longer be replayed`);
    this.name = 'CompactedError';
  }
}

/** First line of an error's message, for logs and one-line CLI errors. */
export function errorText(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0];
}
