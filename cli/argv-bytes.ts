import { readFileSync } from 'node:fs';

/**
 * Command-line arguments as the raw bytes the caller passed, as etcdctl
 * takes them. Node decodes argv as UTF-8 before any script runs, turning
 * every invalid byte into U+FFFD, so a key written by etcdctl with such
 * bytes could not be named on our command line, and two different raw
 * arguments (`\xff`, `\xfe`) would look the same. Linux keeps the original
 * bytes in /proc/self/cmdline (NUL-separated); the script's own arguments
 * are its last `process.argv.length - 2` entries, whatever node options
 * came before them.
 *
 * The contract, in two halves:
 * - `losslessArgv(argv)` (applied once, before commander parses) re-decodes
 *   each user argument from its raw bytes, keeping every byte that is not
 *   valid UTF-8 as a lone surrogate U+DC80..U+DCFF (Python's
 *   "surrogateescape"). Valid UTF-8 decodes as before, so an argument that
 *   was fine is the same string; one that was not is now distinct per byte.
 * - `argBytes(decoded)` turns such a string back into exactly those bytes.
 * Anything else that meets an escaped string sees a lone surrogate, which
 * Node encodes (stdout, Buffer.from, spawn) as U+FFFD's UTF-8, just as it
 * would have encoded Node's own U+FFFD: no change for code that does not
 * ask for raw bytes.
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

const ESCAPE_BASE = 0xdc00;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Length of the UTF-8 sequence a lead byte announces; 0 for a byte that cannot lead one. */
function sequenceLength(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/**
 * Bytes → string, bijectively: valid UTF-8 sequences as their characters
 * (the strict decoder rejects overlong forms, encoded surrogates and code
 * points past U+10FFFF, so each accepted sequence is the one canonical
 * encoding), every other byte b (always >= 0x80) as U+DC00+b.
 */
export function decodeEscaped(bytes: Buffer): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    if (b < 0x80) {
      out += String.fromCharCode(b);
      i++;
      continue;
    }
    const len = sequenceLength(b);
    if (len > 0 && i + len <= bytes.length) {
      try {
        out += strictUtf8.decode(bytes.subarray(i, i + len));
        i += len;
        continue;
      } catch {
        /* not a valid sequence: escape the lead byte alone */
      }
    }
    out += String.fromCharCode(ESCAPE_BASE + b);
    i++;
  }
  return out;
}

/** The inverse of decodeEscaped: U+DC80..U+DCFF back to their byte, everything else as UTF-8. */
export function encodeEscaped(text: string): Buffer {
  const parts: Buffer[] = [];
  let run = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // A lone low surrogate only: a high surrogate right before it makes a real character.
    const lone = c >= ESCAPE_BASE + 0x80 && c <= ESCAPE_BASE + 0xff && !(i > 0 && text.charCodeAt(i - 1) >= 0xd800 && text.charCodeAt(i - 1) <= 0xdbff);
    if (lone) {
      if (run) parts.push(Buffer.from(run, 'utf8'));
      run = '';
      parts.push(Buffer.from([c - ESCAPE_BASE]));
    } else {
      run += text[i];
    }
  }
  if (run) parts.push(Buffer.from(run, 'utf8'));
  return Buffer.concat(parts);
}

/**
 * `argv` (node, script, user arguments) with each user argument re-decoded
 * from its raw bytes by decodeEscaped. Returned unchanged unless it is this
 * process's own command line (same length, and every argument equals what
 * Node made of the raw bytes), so a caller passing a made-up argv is safe.
 */
export function losslessArgv(argv: string[]): string[] {
  const args = rawUserArgs();
  if (!args || argv.length !== process.argv.length || args.length !== argv.length - 2) return argv;
  const user = argv.slice(2);
  if (!user.every((a, i) => a === args[i].toString('utf8'))) return argv;
  return [...argv.slice(0, 2), ...args.map((a) => decodeEscaped(a))];
}

/**
 * The raw bytes of a command-line argument that commander handed us as
 * `decoded`. After losslessArgv, this is exact: escaped bytes come back as
 * themselves. A string holding Node's own U+FFFD (argv not re-decoded) is
 * looked up among the process's raw arguments (the first whose decoding
 * equals it), the best that can be done then. Values that did not come
 * from argv (defaults, env) are plain UTF-8.
 */
export function argBytes(decoded: string): Buffer {
  if (/[\udc80-\udcff]/.test(decoded)) return encodeEscaped(decoded);
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
