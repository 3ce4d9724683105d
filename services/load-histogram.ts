import type { Histogram } from 'hdr-histogram-js';

/**
 * hdr-histogram-js, required on first use: loading it (its WebAssembly
 * build and pako come along) cost every mesh command ~130 ms of CPU at
 * start-up, though only load runs record latencies.
 */
let hdr: typeof import('hdr-histogram-js') | undefined;
function hdrModule(): typeof import('hdr-histogram-js') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (hdr ??= require('hdr-histogram-js') as typeof import('hdr-histogram-js'));
}

/** Latency figures of a run or of one second, in ms. */
export interface LatencyFigures {
  p50: number;
  p90: number;
  p99: number;
  'p99.9': number;
  max: number;
}

/** The longest latency a histogram holds exactly enough (1 h); longer ones are clamped to it, never dropped. */
const HIGHEST_US = 3_600_000_000;

function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * Latencies in an HdrHistogram (hdr-histogram-js, pure JS): microsecond
 * resolution, 3 significant digits over 1 µs .. 1 h, constant memory however
 * many calls. Percentiles are HdrHistogram's (the highest value equivalent
 * to the percentile's bucket, so within 0.1 % above the exact one), capped
 * at the exact max.
 */
export class LatencyHistogram {
  private readonly h: Histogram = hdrModule().build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 3 });

  record(ms: number): void {
    this.h.recordValue(Math.min(HIGHEST_US, Math.max(1, Math.round(ms * 1000))));
  }

  get count(): number {
    return this.h.totalCount;
  }

  figures(): LatencyFigures {
    if (this.h.totalCount === 0) return { p50: 0, p90: 0, p99: 0, 'p99.9': 0, max: 0 };
    const max = this.h.maxValue;
    const at = (p: number) => round(Math.min(max, this.h.getValueAtPercentile(p)) / 1000);
    return { p50: at(50), p90: at(90), p99: at(99), 'p99.9': at(99.9), max: round(max / 1000) };
  }

  /** Free the counts (WASM histograms need it; for the JS one it is a no-op kept for the contract). */
  destroy(): void {
    this.h.destroy();
  }
}
