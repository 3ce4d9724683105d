import type { Metric, Registry } from 'prom-client';

/**
 * One label set's histogram: bucket counts in a typed array, so an
 * observation on the call path is a short scan and two additions. prom-client's
 * own `Histogram.labels(...).observe()` validates and hashes the label set on
 * every observation, which was the largest metrics cost per call.
 */
export class HistogramCell {
  /** Non-cumulative counts per bucket; the last slot is the +Inf overflow. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }
}

/**
 * A Prometheus histogram family made of HistogramCells, exposed through a
 * prom-client Registry in the text format prom-client writes for its own
 * histograms (`_bucket` with cumulative `le` series, `_sum`, `_count`).
 *
 * Workaround: prom-client has no public way to add pre-counted buckets to a
 * Histogram, but its Registry formats any registered object whose `get()`
 * returns a metric object (name, help, type, values); this class is such an
 * object, registered through a cast. Series exist from a cell's creation.
 */
export class TallyHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly cells = new Map<string, HistogramCell>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  /** The cell of one label set: look it up once and keep it. */
  cell(labels: Record<string, string>): HistogramCell {
    const key = JSON.stringify(labels);
    let c = this.cells.get(key);
    if (!c) this.cells.set(key, (c = new HistogramCell({ ...labels }, this.buckets)));
    return c;
  }

  /** What prom-client's Registry formats (its MetricObjectWithValues). */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> }> {
    const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = [];
    for (const c of this.cells.values()) {
      let acc = 0;
      this.buckets.forEach((le, i) => {
        acc += c.counts[i];
        values.push({ labels: { ...c.labels, le }, value: acc, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...c.labels, le: '+Inf' }, value: c.count, metricName: `${this.name}_bucket` });
      values.push({ labels: c.labels, value: c.sum, metricName: `${this.name}_sum` });
      values.push({ labels: c.labels, value: c.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Registry.resetMetrics calls this. */
  reset(): void {
    this.cells.clear();
  }
}
