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

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

export function parsePromText(text: string): { samples: PromSample[]; skipped: number } {
  const samples: PromSample[] = [];
  let skipped = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
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
