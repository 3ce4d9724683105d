/**
 * The registry record, byte-compatible with etcd's Go `naming/endpoints`
 * (`endpoints.Manager` writes `{"Op":0,"Addr":"host:port","Metadata":...}`),
 * so Go's resolver reads our keys and we read theirs.
 *
 * Key: `<prefix>/<service>/<host:port>`. Value: that JSON. Readers accept any
 * JSON (or null) in Metadata; anything else is a DecodeError, which callers
 * log with the key and skip: one bad record never poisons the endpoint list.
 *
 * Metadata is written as `null` or a JSON *string* (our attributes encoded
 * inside it), never an object: etcd's Go resolver hands Metadata to grpc-go's
 * `resolver.Address.Metadata`, which grpc-go compares and hashes, and a
 * `map[string]interface{}` panics there (etcd issue 19700). Readers accept
 * null, a string (JSON object inside it or not) and any object.
 */

/** One backend as read from the registry. */
export interface EndpointRecord {
  /** The etcd key it was read from. */
  key: string;
  /** `host:port` the backend serves on. */
  addr: string;
  /**
   * Metadata as the writer meant it: a string holding a JSON object (ours) is
   * unwrapped to that object; null, other strings and any other JSON as stored.
   */
  metadata: unknown;
  /** What the balancer uses from Metadata (weight defaulted when absent or bad). */
  attributes: EndpointAttributes;
  /** Why part of Metadata was ignored (a bad weight): callers log these with the key. */
  warnings: string[];
}

/** Default weight of a backend whose Metadata names none (or a bad one). */
export const DEFAULT_WEIGHT = 100;
/**
 * Weight 0 drains a backend: it stays registered and connected, takes no
 * new calls while another backend can, and its calls in flight finish
 * (the load_aware policy; round_robin ignores weights). A valid weight,
 * never defaulted.
 */
export const DRAIN_WEIGHT = 0;
export const MIN_WEIGHT = DRAIN_WEIGHT;
export const MAX_WEIGHT = 1000;

/** The attributes the mesh reads from (and writes into) Metadata. */
export interface EndpointAttributes {
  /** Relative share of traffic, MIN_WEIGHT..MAX_WEIGHT (0: drained); DEFAULT_WEIGHT when unset or bad. */
  weight: number;
  zone?: string;
  version?: string;
  /** host:port of the backend's /metrics. */
  metrics?: string;
}

/**
 * A weight as written by a person or a program: an integer (or a string of
 * digits) in MIN_WEIGHT..MAX_WEIGHT. Returns the weight, or why it is not one.
 */
export function parseWeight(value: unknown): number | string {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\s*-?\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n)) return `weight ${JSON.stringify(value)} is not an integer`;
  if (n < MIN_WEIGHT || n > MAX_WEIGHT) return `weight ${n} is out of range ${MIN_WEIGHT}..${MAX_WEIGHT}`;
  return n;
}

/** Metadata as stored → the object our attributes live in (or null). */
function unwrapMetadata(md: unknown): unknown {
  if (typeof md !== 'string') return md;
  const t = md.trim();
  if (!t.startsWith('{')) return md;
  try {
    const inner: unknown = JSON.parse(t);
    return inner !== null && typeof inner === 'object' && !Array.isArray(inner) ? inner : md;
  } catch {
    return md;
  }
}

function attributesOf(md: unknown, warnings: string[]): EndpointAttributes {
  const attrs: EndpointAttributes = { weight: DEFAULT_WEIGHT };
  if (md === null || typeof md !== 'object' || Array.isArray(md)) return attrs;
  const o = md as Record<string, unknown>;
  if (o.weight !== undefined) {
    const w = parseWeight(o.weight);
    if (typeof w === 'number') attrs.weight = w;
    else warnings.push(`${w}; using the default weight ${DEFAULT_WEIGHT}`);
  }
  if (typeof o.zone === 'string') attrs.zone = o.zone;
  if (typeof o.version === 'string') attrs.version = o.version;
  if (typeof o.metrics === 'string') attrs.metrics = o.metrics;
  return attrs;
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

/**
 * The value Go's `endpoints.Manager.AddEndpoint` would write for this
 * backend, with Go-safe Metadata: null and strings as given, anything else
 * (our attribute object) encoded as a JSON string.
 */
export function encodeEndpoint(addr: string, metadata: unknown = null): string {
  const md = metadata === undefined || metadata === null ? null : typeof metadata === 'string' ? metadata : JSON.stringify(metadata);
  return JSON.stringify({ Op: OP_ADD, Addr: addr, Metadata: md });
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
  const metadata = unwrapMetadata(rec.Metadata === undefined ? null : rec.Metadata);
  const warnings: string[] = [];
  return { key, addr: rec.Addr, metadata, attributes: attributesOf(metadata, warnings), warnings };
}
