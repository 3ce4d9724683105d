import type { HerdResult } from './scale-herd';
import type { WideResult, WideVariant } from './scale-wide';
import { median, round } from './bench-report';

/** One line of the side-by-side table: ours, Go's, and ours / Go. */
export interface VersusRow {
  metric: string;
  ours: number;
  go: number;
  unit: string;
  /** ours / go (NaN when Go's is 0 or missing). */
  ratio: number;
  /** Which way is better, for the reader: lower (times, CPU, messages) or higher (throughput ratios). */
  better: 'lower' | 'higher';
}

const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? round(a / b, 2) : NaN);

function row(metric: string, ours: number, go: number, unit: string, better: VersusRow['better'] = 'lower'): VersusRow {
  return { metric, ours, go, unit, ratio: ratio(ours, go), better };
}

/** Ours against Go's: the herd (same sizes, same etcd, one after the other) and the client over 1,000 backends. */
export function versusRows(herd: HerdResult | undefined, goHerd: HerdResult | undefined, wide: WideResult | undefined): VersusRow[] {
  const out: VersusRow[] = [];
  if (herd && goHerd) {
    const n = herd.registrations;
    out.push(
      row(`etcd answering → all ${n} registrations back (SIGSTOP ${herd.outageMs / 1000} s = 3 TTL)`, herd.reregisteredMs, goHerd.reregisteredMs, 'ms'),
      row('  same, median registration', herd.reregisteredP50Ms, goHerd.reregisteredP50Ms, 'ms'),
      row(`etcd answering → every one of ${herd.resolvers} resolvers' sets right`, herd.resolversSettledMs, goHerd.resolversSettledMs, 'ms'),
      row("  resolvers right at the end (of all)", herd.resolversCorrect, goHerd.resolversCorrect, '', 'higher'),
      row('etcd peak messages/s (200 ms, first 5 s after SIGCONT)', herd.peakPerS, goHerd.peakPerS, '/s'),
      row('  etcd messages/s, first second after SIGCONT', herd.firstSecondMsgs, goHerd.firstSecondMsgs, '/s'),
      row('client processes CPU, SIGSTOP → settled (registrars + resolvers)', herd.recoveryCpuS.total, goHerd.recoveryCpuS.total, 's'),
      row('  registrars', herd.recoveryCpuS.registrars, goHerd.recoveryCpuS.registrars, 's'),
      row('  resolvers', herd.recoveryCpuS.resolvers, goHerd.recoveryCpuS.resolvers, 's'),
      row('leases lost (re-granted)', herd.losses, goHerd.losses, ''),
      row('empty sets handed to the channel', herd.emptySets, goHerd.emptySets, ''),
      row('smallest set handed over after the first full one', herd.minSetAfterFull, goHerd.minSetAfterFull, '', 'higher'),
      row('sets handed over per resolver, whole run', herd.deliveriesPerResolver, goHerd.deliveriesPerResolver, ''),
      row(`steady state: registrar CPU per registration (TTL ${herd.ttl} s)`, herd.steadyCpuUsPerRegPerS, goHerd.steadyCpuUsPerRegPerS, 'µs/s'),
      row('steady state: resolver CPU per resolver', herd.steadyCpuUsPerResolverPerS, goHerd.steadyCpuUsPerResolverPerS, 'µs/s'),
      row('steady state: etcd messages/s', herd.steadyPerS, goHerd.steadyPerS, '/s'),
    );
  }
  if (wide?.go) {
    const g = wide.go;
    const first = (v: WideVariant) => Math.max(...v.firstCallMs);
    out.push(
      row(`one client: rps over ${wide.wideFull.backends} / over ${wide.narrow.backends} backends, every backend (ours --subset 0; Go round_robin)`, wide.fullRatio, g.ratio, '', 'higher'),
      row(`  ours with its defaults (a subset of ${wide.wide.subset ?? 20} of ${wide.wide.backends}) / Go over every backend`, wide.ratio, g.ratio, '', 'higher'),
      row(`  calls/s over ${wide.narrow.backends} backends (median)`, median(wide.narrow.rps), median(g.narrow.rps), '/s', 'higher'),
      row(`  calls/s over ${wide.wideFull.backends}, every backend (median)`, median(wide.wideFull.rps), median(g.wide.rps), '/s', 'higher'),
      row(`  client start → first call over ${wide.wideFull.backends}, every backend (max)`, first(wide.wideFull), first(g.wide), 'ms'),
      row(`  client RSS after the run, ${wide.wideFull.backends} backends`, wide.wideFull.rssMB, g.wide.rssMB, 'MB'),
      row(`  client CPU while idle, ${wide.wideFull.backends} backends`, wide.wideFull.idleCpuMsPerS, g.wide.idleCpuMsPerS, 'ms/s'),
    );
  }
  return out;
}

/** The rows as a plain-text table (metric, ours, Go, ours/Go). */
export function versusTable(rows: VersusRow[], title: string): string {
  if (rows.length === 0) return '';
  const fmt = (v: number, unit: string) => (Number.isFinite(v) ? `${round(v, 2)}${unit && unit !== '' ? ` ${unit}` : ''}` : '-');
  const cells = rows.map((r) => [r.metric, fmt(r.ours, r.unit), fmt(r.go, r.unit), Number.isFinite(r.ratio) ? `${r.ratio}` : '-', r.better === 'lower' ? 'lower is better' : 'higher is better']);
  const head = ['metric', 'ours', 'Go', 'ours/Go', ''];
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => `${c[0].padEnd(w[0])}  ${c[1].padStart(w[1])}  ${c[2].padStart(w[2])}  ${c[3].padStart(w[3])}  ${c[4]}`.trimEnd();
  return [title, line(head), '-'.repeat(w.reduce((a, b) => a + b, 0) + 8), ...cells.map(line)].join('\n');
}
