import { percentile } from '../services/load-generator';

/** A distribution of samples (ms unless named otherwise), as every timing figure is reported. */
export interface Dist {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  min: number;
}

export function round(n: number, digits = 2): number {
  if (!Number.isFinite(n)) return n;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Nearest-rank percentiles of `samples` (the same definition the load generator uses). */
export function dist(samples: number[]): Dist {
  const s = Float64Array.from(samples).sort();
  return {
    n: s.length,
    p50: round(percentile(s, 50)),
    p90: round(percentile(s, 90)),
    p99: round(percentile(s, 99)),
    max: round(s.length ? s[s.length - 1] : 0),
    min: round(s.length ? s[0] : 0),
  };
}

/** The Dist of one timing over trials: that field of every trial that has it (a trial where it was not seen leaves it undefined). */
export function distOf<T extends object>(trials: T[], field: keyof T): Dist {
  return dist(trials.flatMap((t) => (typeof t[field] === 'number' ? [t[field] as number] : [])));
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** max/min of per-backend counts (1 = perfectly even). Infinity if a backend expected got nothing. */
export function maxMinRatio(counts: Record<string, number>, expectedBackends: number): number {
  const vs = Object.values(counts);
  if (vs.length < expectedBackends) return Infinity;
  return Math.max(...vs) / Math.max(1e-9, Math.min(...vs));
}

/** Where the epoch-based high-resolution clock is comparable across processes of one machine. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

/** One row of the printed table. */
export interface Row {
  section: string;
  metric: string;
  value: string;
  target?: string;
  /** true met, false missed, undefined no target. */
  ok?: boolean;
}

export class Report {
  readonly rows: Row[] = [];
  readonly json: Record<string, unknown> = {};

  row(section: string, metric: string, value: string, target?: string, ok?: boolean): void {
    this.rows.push({ section, metric, value, target, ok });
  }

  /** A plain-text table: section, metric, value, target, verdict. */
  table(): string {
    const head: Row = { section: 'section', metric: 'metric', value: 'value', target: 'target' };
    const all = [head, ...this.rows];
    const w = {
      section: Math.max(...all.map((r) => r.section.length)),
      metric: Math.max(...all.map((r) => r.metric.length)),
      value: Math.max(...all.map((r) => r.value.length)),
      target: Math.max(...all.map((r) => (r.target ?? '').length)),
    };
    const line = (r: Row, verdict: string) =>
      `${r.section.padEnd(w.section)}  ${r.metric.padEnd(w.metric)}  ${r.value.padStart(w.value)}  ${(r.target ?? '').padEnd(w.target)}  ${verdict}`.trimEnd();
    const out = [line(head, 'verdict'), '-'.repeat(w.section + w.metric + w.value + w.target + 16)];
    let last = '';
    for (const r of this.rows) {
      if (last && r.section !== last) out.push('');
      last = r.section;
      out.push(line(r, r.ok === undefined ? '' : r.ok ? 'MET' : 'MISSED'));
    }
    return out.join('\n');
  }
}

export function fmtDist(d: Dist, unit = 'ms'): string {
  return `p50 ${d.p50} / p99 ${d.p99} / max ${d.max} ${unit} (n=${d.n})`;
}

export function fmtMB(bytes: number): string {
  return `${round(bytes / 1024 / 1024, 1)} MB`;
}
