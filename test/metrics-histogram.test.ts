import { describe, expect, it } from 'vitest';
import { Histogram, Registry } from 'prom-client';
import { TallyHistogram } from '../services/metrics-histogram';
import { GRPC_HANDLING_BUCKETS } from '../services/metrics-grpc-labels';

/** Sample lines as `name{sorted labels} value`, so label order does not matter. */
function samples(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const m = /^([^{ ]+)(?:\{(.*)\})? (.+)$/.exec(l)!;
      const labels = (m[2] ?? '').split(',').filter(Boolean).sort().join(',');
      return `${m[1]}{${labels}} ${m[3]}`;
    })
    .sort();
}

describe('TallyHistogram', () => {
  it('writes the same exposition as prom-client’s Histogram for the same observations', async () => {
    const a = new Registry();
    const b = new Registry();
    const name = 'grpc_client_handling_seconds';
    const help = 'Histogram of response latency.';
    const ref = new Histogram({ name, help, labelNames: ['grpc_method', 'grpc_service'], buckets: GRPC_HANDLING_BUCKETS, registers: [a] });
    const ours = new TallyHistogram(name, help, GRPC_HANDLING_BUCKETS, b);
    const values = [0, 0.001, 0.005, 0.0051, 0.01, 0.3, 1, 2.5, 9.99, 10, 11, 120];
    for (const method of ['SayHello', 'SayBye']) {
      const cell = ours.cell({ grpc_service: 'helloworld.Greeter', grpc_method: method });
      for (const v of method === 'SayHello' ? values : values.slice(3, 6)) {
        ref.observe({ grpc_service: 'helloworld.Greeter', grpc_method: method }, v);
        cell.observe(v);
      }
    }
    const expected = samples(await a.metrics());
    expect(expected.length).toBe(2 * (GRPC_HANDLING_BUCKETS.length + 3));
    expect(samples(await b.metrics())).toEqual(expected);
    expect(await b.metrics()).toContain(`# TYPE ${name} histogram`);
  });
});
