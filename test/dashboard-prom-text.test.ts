import { describe, expect, it } from 'vitest';
import { Counter, Histogram, Registry } from 'prom-client';
import { histogramQuantile, parsePromText, type Buckets } from '../dashboard/dashboard-prom-text';

/**
 * What the dashboard's scraper reads, checked on prom-client's own output:
 * samples with labels (escapes included), histogram buckets, and the
 * quantile interpolation Prometheus' histogram_quantile does.
 */
describe('dashboard prom text', () => {
  it('reads prom-client output: counters with labels, histogram buckets; a bad line is skipped, not fatal', async () => {
    const registry = new Registry();
    const c = new Counter({ name: 'grpc_server_handled_total', help: 'h', labelNames: ['grpc_code', 'note'], registers: [registry] });
    c.inc({ grpc_code: 'OK', note: 'a "quoted"\\ value' }, 7);
    c.inc({ grpc_code: 'UNAVAILABLE', note: '' }, 2);
    const h = new Histogram({ name: 'grpc_server_handling_seconds', help: 'h', buckets: [0.001, 0.01, 0.1], registers: [registry] });
    for (const v of [0.0005, 0.005, 0.005, 0.05, 5]) h.observe(v);
    const { samples, skipped } = parsePromText(`${await registry.metrics()}\nnot a sample line {\n`);
    expect(skipped).toBe(1);
    const handled = samples.filter((s) => s.name === 'grpc_server_handled_total');
    expect(handled.map((s) => [s.labels.grpc_code, s.labels.note, s.value])).toEqual([
      ['OK', 'a "quoted"\\ value', 7],
      ['UNAVAILABLE', '', 2],
    ]);
    const buckets: Buckets = new Map(samples.filter((s) => s.name === 'grpc_server_handling_seconds_bucket').map((s) => [s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), s.value]));
    expect([...buckets.entries()]).toEqual([[0.001, 1], [0.01, 3], [0.1, 4], [Infinity, 5]]);
    // Rank 2.5 of 5 lies in (0.001, 0.01]: 0.001 + 0.009 * (2.5 - 1) / 2.
    expect(histogramQuantile(0.5, buckets)).toBeCloseTo(0.00775, 6);
    // In the +Inf bucket: the largest finite bound, as Prometheus answers.
    expect(histogramQuantile(0.99, buckets)).toBe(0.1);
    expect(histogramQuantile(0.5, new Map([[0.1, 0], [Infinity, 0]]))).toBeUndefined();
  });

  it('with names, builds only those samples: other lines are passed over (a 4 MiB body of them costs one scan)', () => {
    const text = 'a_total 1\nwanted{x="1"} 2\r\nwanted 3\nwanted_not 4\n# wanted 5\nnot a sample line {\nwanted'.concat(' 6');
    const { samples, skipped } = parsePromText(text, new Set(['wanted']));
    expect(samples.map((s) => [s.name, s.labels, s.value])).toEqual([
      ['wanted', { x: '1' }, 2],
      ['wanted', {}, 3],
      ['wanted', {}, 6],
    ]);
    expect(skipped).toBe(0);
    const noise = 'x_total{a="b"} 1\n'.repeat(256 * 1024);
    const t0 = performance.now();
    expect(parsePromText(noise, new Set(['wanted'])).samples).toEqual([]);
    console.log(`parsePromText over ${(noise.length / 1024 / 1024).toFixed(1)} MiB of other metrics: ${(performance.now() - t0).toFixed(0)} ms`);
  });
});
