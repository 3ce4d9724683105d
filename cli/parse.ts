import { accessSync, constants, statSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError } from 'commander';
import { ETCD_SCHEME, keyPrefixOf } from '../balancer/resolver-etcd';
import { isHostPort, MAX_WEIGHT, MIN_WEIGHT, parseWeight as weightOf } from '../balancer/endpoint-codec';
import { LB_POLICIES, type LbPolicy } from '../balancer/channel';
import { validateCoordinationName } from '../coordination/lock-name';
import { BadFailureCodesError, FailureCodes } from '../balancer/failure-codes';

/**
 * Value parsers for CLI flags. Each throws commander's InvalidArgumentError,
 * which main.ts turns into one line on stderr and exit code 2.
 */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Longest duration a flag takes: Node timers cannot wait longer than 2^31-1 ms (about 24.8 days). */
export const MAX_DURATION_MS = 596 * 3_600_000;

/** Go-style duration (`500ms`, `1s`, `1.5s`, `2m`, `1m30s`); a bare number means seconds. Returns ms. */
export function parseDuration(value: string): number {
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) {
    const ms = Number(v) * 1000;
    if (ms > MAX_DURATION_MS) throw new InvalidArgumentError(`${JSON.stringify(value)} is too long (at most ${MAX_DURATION_MS / 3_600_000}h)`);
    return ms;
  }
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(v); m; m = re.exec(v)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * UNIT_MS[m[2]];
    consumed = m.index + m[0].length;
  }
  if (v === '' || consumed !== v.length) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a duration (e.g. 500ms, 1s, 2m)`);
  if (total > MAX_DURATION_MS) throw new InvalidArgumentError(`${JSON.stringify(value)} is too long (at most ${MAX_DURATION_MS / 3_600_000}h)`);
  return total;
}

/** A duration that must be positive (ms). */
export function parsePositiveDuration(value: string): number {
  const ms = parseDuration(value);
  if (ms <= 0) throw new InvalidArgumentError(`${JSON.stringify(value)} must be greater than zero`);
  return ms;
}

/** An integer within [min, max]. */
export function intIn(min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not an integer`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`${n} is out of range ${min}..${max}`);
    return n;
  };
}

export const parsePort = intIn(0, 65535);
/** etcd rejects TTLs below 1 s and above about 9e9 s; we cap at a day. */
export const parseTtl = intIn(1, 86_400);

/** A single path segment: non-empty, no `/`, printable. */
export function parseName(value: string): string {
  if (value === '') throw new InvalidArgumentError('must not be empty');
  if (value.includes('/')) throw new InvalidArgumentError(`${JSON.stringify(value)} must not contain "/"`);
  if (/[\s\x00-\x1f]/.test(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} must not contain spaces or control characters`);
  return value;
}

/** A key prefix: non-empty segments separated by `/`, no leading or trailing `/`. */
export function parsePrefix(value: string): string {
  const v = value.replace(/^\/+|\/+$/g, '');
  if (v === '' || v.split('/').some((s) => s === '')) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a key prefix (e.g. services)`);
  if (/[\s\x00-\x1f]/.test(v)) throw new InvalidArgumentError(`${JSON.stringify(value)} must not contain spaces or control characters`);
  return v;
}

/** `host:port[,host:port...]`, each optionally `http://` or `https://`. */
export function parseEndpoints(value: string): string[] {
  const list = value.split(',').map((s) => s.trim());
  if (list.length === 0 || list.some((e) => e === '')) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a list of etcd endpoints`);
  for (const e of list) {
    const bare = e.replace(/^https?:\/\//, '').replace(/\/$/, '');
    if (!isHostPort(bare)) throw new InvalidArgumentError(`${JSON.stringify(e)} is not host:port or http(s)://host:port`);
  }
  return list.map((e) => e.replace(/\/$/, ''));
}

/** A host name or IP address to bind/advertise. */
export function parseHost(value: string): string {
  if (!/^[A-Za-z0-9._:-]+$/.test(value) || value === '') throw new InvalidArgumentError(`${JSON.stringify(value)} is not a host name or IP address`);
  return value;
}

/**
 * A service name: one key segment that is also usable as a host name, since
 * the resolver's default authority (and so the name a TLS certificate must
 * carry) is the service name. Letters, digits, `.`, `_`, `-`; at most 253.
 */
export function parseServiceName(value: string): string {
  parseName(value);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(value) || value.length > 253) {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a service name (letters, digits, ".", "_", "-"; starting with a letter or digit)`);
  }
  return value;
}

/** A file that exists and is readable (certificates, keys). */
export function parseFileArg(value: string): string {
  if (value === '') throw new InvalidArgumentError('must not be empty');
  try {
    if (statSync(value).isDirectory()) throw new InvalidArgumentError(`${value} is a directory, not a file`);
    accessSync(value, constants.R_OK);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError(`cannot read ${value}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message}`);
  }
  return value;
}

/** A TLS server name to verify (a DNS name or an IP address). */
export function parseServerName(value: string): string {
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(value) && !/^[0-9a-fA-F:.]+$/.test(value)) {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a host name`);
  }
  return value;
}

/** A grpc-js target (`ipv4:127.0.0.1:50051,...`, `dns:host:port`, `etcd:///prefix/service`...), checked by grpc-js (an `etcd:` one by the resolver's own rule). */
/**
 * A target as gRPC's naming grammar reads it (`scheme:[//authority/]path`,
 * doc/naming.md in grpc/grpc), the same split grpc-js hands a resolver.
 * grpc-js exports no parser (only an internal build path), so the one
 * regular expression is repeated here rather than imported from its build.
 */
function splitTarget(value: string): grpc.experimental.GrpcUri | null {
  const m = /^(?:([A-Za-z0-9+.-]+):)?(?:\/\/([^/]*)\/)?(.+)$/.exec(value);
  return m ? { scheme: m[1], authority: m[2], path: m[3] } : null;
}

export function parseTarget(value: string): string {
  if (value.trim() === '') throw new InvalidArgumentError('must not be empty');
  try {
    // Parsing registers nothing: an `etcd:` target is checked by the
    // resolver's own rule (keyPrefixOf, on grpc-js's URI parse); any other
    // by an idle channel, which parses it and builds its resolver, connects nothing.
    const uri = splitTarget(value);
    if (uri?.scheme === ETCD_SCHEME) keyPrefixOf(uri);
    else new grpc.Channel(value, grpc.credentials.createInsecure(), {}).close();
  } catch (err) {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not a gRPC target: ${(err as Error).message.split('\n')[0]}`);
  }
  return value;
}

/** NAME of lock/elect/queue/barrier: used verbatim as a key prefix (see coordination/lock-name.ts). */
export function parseCoordinationName(value: string): string {
  const bad = validateCoordinationName(value);
  if (bad) throw new InvalidArgumentError(value === '' ? bad : `${JSON.stringify(value)} ${bad}`);
  return value;
}

/** `--weight`: an integer in 0..1000 (the registry's range; 0 registers the server drained). */
export function parseWeightFlag(value: string): number {
  const w = /^-?\d+$/.test(value) ? weightOf(Number(value)) : `${JSON.stringify(value)} is not an integer`;
  if (typeof w === 'string') throw new InvalidArgumentError(`${w.replace(/^weight /, '')} (a weight is an integer ${MIN_WEIGHT}..${MAX_WEIGHT})`);
  return w;
}

/** `--failure-codes`: status code names, comma-separated (`INTERNAL,UNKNOWN`), or `none`; returns the names. */
export function parseFailureCodes(value: string): string[] {
  try {
    return [...FailureCodes.parse(value).names];
  } catch (err) {
    if (err instanceof BadFailureCodesError) throw new InvalidArgumentError(err.message);
    throw err;
  }
}

/** `--max-ejection-percent`: a number in (0, 100]. */
export function parseEjectionPercent(value: string): number {
  const n = /^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) : NaN;
  if (!(n > 0 && n <= 100)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a percentage in (0, 100]`);
  return n;
}

/** `--lb`: one of the policies the mesh registers. */
export function parseLb(value: string): LbPolicy {
  if (!(LB_POLICIES as readonly string[]).includes(value)) throw new InvalidArgumentError(`unknown policy ${JSON.stringify(value)}; choose one of ${LB_POLICIES.join(', ')}`);
  return value as LbPolicy;
}

/** True for an address that means "every interface" (0.0.0.0, ::, [::] and their long forms): bindable, never dialable. */
export function isUnspecifiedHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (isIPv4(h)) return /^0+(\.0+){3}$/.test(h);
  return isIPv6(h) && h.split(':').every((g) => /^0*$/.test(g));
}

/**
 * `--advertise HOST[:PORT]`: the address clients dial, written into the
 * registration. IPv6 with a port is bracketed (`[2001:db8::1]:50051`); a
 * bare IPv6 address takes no port. Without PORT the bound port is
 * advertised. An unspecified address (0.0.0.0, ::) is refused: no client
 * can dial it.
 */
export function parseAdvertise(value: string): { host: string; port?: number } {
  const v = value.trim();
  let host = v;
  let port: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(v);
  if (bracketed) {
    host = bracketed[1];
    port = bracketed[2];
    if (!isIPv6(host)) throw new InvalidArgumentError(`${JSON.stringify(value)}: ${host} in brackets is not an IPv6 address`);
  } else if (!isIPv6(v) && v.includes(':')) {
    const i = v.lastIndexOf(':');
    host = v.slice(0, i);
    port = v.slice(i + 1);
  }
  if (host === '' || !/^[A-Za-z0-9._:-]+$/.test(host)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not HOST[:PORT] (e.g. 10.0.0.5, 10.0.0.5:50051, [2001:db8::5]:50051)`);
  if (isUnspecifiedHost(host)) throw new InvalidArgumentError(`${JSON.stringify(value)} is an unspecified address no client can dial; advertise the address clients reach this server at`);
  if (port === undefined) return { host };
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) throw new InvalidArgumentError(`${JSON.stringify(value)}: port ${JSON.stringify(port)} is not 1..65535`);
  return { host, port: Number(port) };
}
