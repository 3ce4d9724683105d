/**
 * Names of locks, elections, queues and barriers. A name is used verbatim as
 * a key prefix (`NAME/...`), exactly as etcdctl and Go's concurrency package
 * use it, so `/jobs/lock` and `jobs/lock` are different locks, as they are
 * for `etcdctl lock`. We refuse only what is surely a mistake: an empty name,
 * a trailing `/` (it would make `NAME//...`), an empty path segment,
 * whitespace or control characters (unprintable in logs, unusable in scripts).
 *
 * Returns the reason a name is refused, or undefined if it is fine.
 */
export function validateCoordinationName(name: string): string | undefined {
  if (name === '') return 'must not be empty';
  if (name.endsWith('/')) return 'must not end with "/"';
  if (name.includes('//')) return 'must not contain an empty path segment ("//")';
  if (/[\s\x00-\x1f\x7f]/.test(name)) return 'must not contain spaces or control characters';
  if (Buffer.byteLength(name) > 1024) return 'must be at most 1024 bytes';
  return undefined;
}
