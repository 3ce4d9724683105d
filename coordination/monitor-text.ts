/**
 * Terminal-safe text for what `mesh ls` / `mesh top` print from etcd.
 *
 * Key names and values come from whoever can write to etcd, so printed as
 * they are, a crafted key (`\x1b[2J`, an OSC sequence, a C1 CSI) would drive
 * the reader's terminal. Contract: the output of these functions contains no
 * C0 control (U+0000–U+001F), no DEL (U+007F) and no C1 control
 * (U+0080–U+009F); anything that needed escaping is shown JSON-quoted, so
 * a quoted column is always the escaped form and never ambiguous.
 */

const NEEDS_QUOTING = /[\s\x00-\x1f\x7f-\x9f"]/;
const JSON_UNESCAPED_CONTROLS = /[\x7f-\x9f]/g;

/** JSON text with DEL and C1 escaped too (JSON.stringify escapes only C0); still valid, equal JSON. */
export function jsonSafe(json: string): string {
  return json.replace(JSON_UNESCAPED_CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A stored string for a table column: as is when plain, JSON-quoted (controls escaped) when empty or it has spaces, quotes or control characters. */
export function shown(s: string): string {
  return s !== '' && !NEEDS_QUOTING.test(s) ? s : jsonSafe(JSON.stringify(s));
}
