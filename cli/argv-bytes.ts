import { readFileSync } from 'node:fs';

/**
 * Command-line arguments as the raw bytes the caller passed, as etcdctl
 * takes them. Node decodes argv as UTF-8 before any script runs, turning
 * every invalid byte into U+FFFD, so a key written by etcdctl with such
 * bytes could not be named on our command line. Linux keeps the original
 * bytes in /proc/self/cmdline (NUL-separated); the script's own arguments
 * are its last `process.argv.length - 2` entries, whatever node options
 * came before them.
 *
 * Where /proc is not there (not Linux), the UTF-8 encoding of the decoded
 * string is all we have.
 */
let raw: Buffer[] | null | undefined;

function rawUserArgs(): Buffer[] | null {
  if (raw !== undefined) return raw;
  raw = null;
  try {
    const all = readFileSync('/proc/self/cmdline');
    const parts: Buffer[] = [];
    let start = 0;
    for (let i = 0; i < all.length; i++) {
      if (all[i] === 0) {
        parts.push(all.subarray(start, i));
        start = i + 1;
      }
    }
    if (start < all.length) parts.push(all.subarray(start));
    const n = process.argv.length - 2;
    if (n >= 0 && parts.length >= n) raw = parts.slice(parts.length - n);
  } catch {
    /* no /proc: fall back to UTF-8 */
  }
  return raw;
}

/**
 * The raw bytes of a command-line argument that commander handed us as
 * `decoded`. Arguments that decoded cleanly are their UTF-8 encoding; one
 * holding U+FFFD is looked up among the process's own raw arguments (the
 * first whose decoding equals it), so invalid bytes pass through unchanged.
 * Values that did not come from argv (defaults, env) are plain UTF-8.
 */
export function argBytes(decoded: string): Buffer {
  if (!decoded.includes('\uFFFD')) return Buffer.from(decoded, 'utf8');
  const args = rawUserArgs();
  if (args) {
    const user = process.argv.slice(2);
    for (let i = 0; i < user.length; i++) {
      if (user[i] === decoded && args[i].toString('utf8') === decoded) return Buffer.from(args[i]);
    }
    // `--flag=value` forms: the value is a suffix of one raw argument.
    for (const a of args) {
      const eq = a.indexOf(0x3d);
      if (eq >= 0 && a.subarray(eq + 1).toString('utf8') === decoded) return Buffer.from(a.subarray(eq + 1));
    }
  }
  return Buffer.from(decoded, 'utf8');
}
