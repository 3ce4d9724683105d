/**
 * The registry record, byte-compatible with etcd's Go `naming/endpoints`
 * (`endpoints.Manager` writes `{"Op":0,"Addr":"host:port","Metadata":...}`),
 * so Go's resolver reads our keys and we read theirs.
 *
 * Key: `<prefix>/<service>/<host:port>`. Value: that JSON. Readers accept any
 * JSON (or null) in Metadata; anything else is a DecodeError, which callers
 * log with the key and skip: one bad record never poisons the endpoint list.
 */

/** One backend as read from the registry. */
export interface EndpointRecord {
  /** The etcd key it was read from. */
  key: string;
  /** `host:port` the backend serves on. */
  addr: string;
  /** Whatever JSON the writer put in Metadata (ours: an object; Go's may be null). */
  metadata: unknown;
}

/** Why a registry value was rejected. Never thrown: returned, so callers skip and log. */
export class DecodeError {
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {}
}

/** Largest value we parse; bigger ones are someone else's data, not an endpoint. */
export const MAX_RECORD_BYTES = 64 * 1024;

/** Go's `endpoints.Add` operation code; the only Op a stored record may carry. */
const OP_ADD = 0;

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$/;

/** True when `addr` is `host:port` (IPv6 bracketed) with a port in 1..65535 and a host DNS could hold (<= 253 chars, labels <= 63). */
export function isHostPort(addr: string): boolean {
  const m = HOST_PORT.exec(addr);
  if (!m) return false;
  const host = m[1];
  if (!host.startsWith('[') && (host.length > 253 || host.split('.').some((label) => label.length === 0 || label.length > 63))) return false;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535;
}

/** Deepest JSON nesting a record may have; real Metadata is a few levels deep. */
export const MAX_RECORD_DEPTH = 64;

/**
 * Nesting depth of a JSON text, found by one scan (strings skipped), so a
 * pathological record is refused before anything recurses over it (parsing,
 * logging, pretty-printing in `mesh ls`).
 */
function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) max = Math.max(max, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

/** The key a backend registers under. */
export function endpointKey(prefix: string, service: string, addr: string): string {
  return `${servicePrefix(prefix, service)}${addr}`;
}

/** The key prefix (with trailing slash) under which a service's backends live. */
export function servicePrefix(prefix: string, service: string): string {
  return `${trimSlashes(prefix)}/${trimSlashes(service)}/`;
}

function trimSlashes(s: string): string {
  return s.replace(/^\/+|\/+$/g, '');
}

/** The value Go's `endpoints.Manager.AddEndpoint` would write for this backend. */
export function encodeEndpoint(addr: string, metadata: unknown = null): string {
  return JSON.stringify({ Op: OP_ADD, Addr: addr, Metadata: metadata === undefined ? null : metadata });
}

/** Parse one registry value; a DecodeError says why it is not an endpoint. */
export function decodeEndpoint(key: string, value: Buffer | string): EndpointRecord | DecodeError {
  const size = typeof value === 'string' ? Buffer.byteLength(value) : value.length;
  if (size === 0) return new DecodeError(key, 'empty value');
  if (size > MAX_RECORD_BYTES) return new DecodeError(key, `value of ${size} bytes exceeds ${MAX_RECORD_BYTES}`);
  const text = typeof value === 'string' ? value : value.toString('utf8');
  if (jsonDepth(text) > MAX_RECORD_DEPTH) return new DecodeError(key, `value is nested deeper than ${MAX_RECORD_DEPTH} levels`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return new DecodeError(key, 'value is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return new DecodeError(key, 'value is not a JSON object');
  }
  const rec = parsed as Record<string, unknown>;
  if (rec.Op !== undefined && rec.Op !== OP_ADD) return new DecodeError(key, `Op is ${JSON.stringify(rec.Op)}, not 0 (Add)`);
  if (typeof rec.Addr !== 'string' || rec.Addr === '') return new DecodeError(key, 'missing Addr');
  if (!isHostPort(rec.Addr)) return new DecodeError(key, `Addr ${JSON.stringify(rec.Addr.slice(0, 100))} is not host:port`);
  return { key, addr: rec.Addr, metadata: rec.Metadata === undefined ? null : rec.Metadata };
}
