import { InvalidArgumentError } from 'commander';
import { isHostPort } from '../balancer/endpoint-codec';

/**
 * Value parsers for CLI flags. Each throws commander's InvalidArgumentError,
 * which main.ts turns into one line on stderr and exit code 2.
 */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go-style duration (`500ms`, `1s`, `1.5s`, `2m`, `1m30s`); a bare number means seconds. Returns ms. */
export function parseDuration(value: string): number {
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(v); m; m = re.exec(v)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * UNIT_MS[m[2]];
    consumed = m.index + m[0].length;
  }
  if (v === '' || consumed !== v.length) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a duration (e.g. 500ms, 1s, 2m)`);
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
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError(`${JSON.stringify(value)} is not an integer`);
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
