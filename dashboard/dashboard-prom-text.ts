/**
 * The few things the dashboard reads from a Prometheus text exposition
 * (format 0.0.4, as prom-client writes it): samples as name, labels, value.
 * Comments, HELP/TYPE lines, timestamps and exemplars are ignored; a line
 * that does not parse is skipped (counted in `skipped`), never fatal: the
 * target is someone else's process.
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/g;

function unescapeLabel(v: string): string {
  return v.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

/** Where a sample line's metric name ends: at `{` or white space. */
function nameEnd(line: string): number {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (c === 0x7b || c === 0x20 || c === 0x09) return i;
  }
  return line.length;
}

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

/**
 * Samples of `text`; with `names`, only samples of those metric names are
 * built (the rest are passed over unparsed), so a big body from someone
 * else's process costs one scan, not an object per line. Lines are walked
 * in place rather than split into an array first, for the same reason.
 */
export function parsePromText(text: string, names?: ReadonlySet<string>): { samples: PromSample[]; skipped: number } {
  const samples: PromSample[] = [];
  let skipped = 0;
  for (let start = 0; start < text.length; ) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const line = text.slice(start, end).trim();
    start = end + 1;
    if (line === '' || line.startsWith('#')) continue;
    if (names && !names.has(line.slice(0, nameEnd(line)))) continue;
    const m = SAMPLE.exec(line);
    if (!m) {
      skipped++;
      continue;
    }
    const labels: Record<string, string> = {};
    if (m[2]) for (const l of m[2].matchAll(LABEL)) labels[l[1]] = unescapeLabel(l[2]);
    const value = parseValue(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') {
      skipped++;
      continue;
    }
    samples.push({ name: m[1], labels, value });
  }
  return { samples, skipped };
}

/** Cumulative histogram buckets (upper bound -> count), as `_bucket{le}` gives them. */
export type Buckets = Map<number, number>;

/**
 * The q-quantile (0..1) of a cumulative histogram, interpolated linearly
 * inside the bucket as Prometheus' histogram_quantile does; undefined
 * without observations. A quantile in the +Inf bucket is the largest finite
 * bound.
 */
export function histogramQuantile(q: number, buckets: Buckets): number | undefined {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  if (bounds.length === 0) return undefined;
  const total = buckets.get(bounds[bounds.length - 1]) ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const b of bounds) {
    const c = buckets.get(b) ?? 0;
    if (c >= rank) {
      if (b === Infinity) return prevBound;
      if (c === prevCount) return b;
      return prevBound + ((b - prevBound) * (rank - prevCount)) / (c - prevCount);
    }
    prevBound = b;
    prevCount = c;
  }
  return prevBound;
}
