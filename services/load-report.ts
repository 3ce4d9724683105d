import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import * as path from 'node:path';
import type { LoadReport, LoadTick } from './load-figures';

/** Something the load saw or the demo did, at `tMs` after the load (warm-up included) began. */
export interface LoadMarker {
  tMs: number;
  kind: 'joined' | 'left' | 'resolver' | 'event';
  text: string;
}

export interface ReportInput {
  title: string;
  summary: LoadReport;
  ticks: LoadTick[];
  /** Markers from outside the load (resolver updates, demo steps); backends joined/left are derived from the ticks. */
  markers: LoadMarker[];
  /** The command line, shown in the page. */
  command?: string;
  /** Open loop: calls never sent, per second of their intended start (LoadOptions.onNotSent); none if absent. */
  notSent?: { second: number; count: number }[];
}

/**
 * Backends joining and leaving as the load saw them: a backend joined in the
 * first second it answered a call, and left in the first second that had
 * answered calls but none from it. Derived from replies, not from the
 * registry, so it shows what traffic did (resolver markers show the registry).
 */
export function backendMarkers(ticks: LoadTick[]): LoadMarker[] {
  const out: LoadMarker[] = [];
  const present = new Set<string>();
  for (const t of ticks) {
    for (const [b, n] of Object.entries(t.backends)) {
      if (n > 0 && !present.has(b)) {
        present.add(b);
        out.push({ tMs: (t.second - 1) * 1000, kind: 'joined', text: `${b} joined` });
      }
    }
    if (t.ok === 0) continue;
    for (const b of [...present]) {
      if (!t.backends[b]) {
        present.delete(b);
        out.push({ tMs: (t.second - 1) * 1000, kind: 'left', text: `${b} left` });
      }
    }
  }
  return out;
}

function backendsOf(ticks: LoadTick[]): string[] {
  const s = new Set<string>();
  for (const t of ticks) for (const b of Object.keys(t.backends)) s.add(b);
  return [...s].sort();
}

function errorCodesOf(ticks: LoadTick[]): string[] {
  const s = new Set<string>();
  for (const t of ticks) for (const c of Object.keys(t.errors)) s.add(c);
  return [...s].sort();
}

function csvCell(v: string | number | boolean): string {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Markers of every kind, in time order: the given ones plus the joined/left ones derived from the ticks. */
export function allMarkers(input: ReportInput): LoadMarker[] {
  return [...input.markers, ...backendMarkers(input.ticks)].sort((a, b) => a.tMs - b.tMs);
}

/**
 * One row per second: calls started, ok, failed, latency percentiles of that
 * second's ok calls, each backend's calls and share, each error code's count,
 * and the events that fell in that second. Then, appended later so the
 * columns before keep their place: calls the schedule asked for in the
 * second (empty in closed loop), late ok calls, calls never sent (by
 * intended start).
 */
export function reportCsv(input: ReportInput): string {
  const backends = backendsOf(input.ticks);
  const codes = errorCodesOf(input.ticks);
  const markers = allMarkers(input);
  const head = ['second', 'warmup', 'sent', 'ok', 'failed', 'p50_ms', 'p90_ms', 'p99_ms', 'p99.9_ms', 'max_ms', ...backends.flatMap((b) => [`calls:${b}`, `share_pct:${b}`]), ...codes.map((c) => `error:${c}`), 'events', 'asked', 'late', 'not_sent'];
  const notSent = new Map((input.notSent ?? []).map((n) => [n.second, n.count]));
  const rows = input.ticks.map((t) => {
    const total = t.ok + t.failed;
    const ev = markers.filter((m) => m.tMs >= (t.second - 1) * 1000 && m.tMs < t.second * 1000).map((m) => m.text);
    return [
      t.second,
      t.warmup,
      t.sent,
      t.ok,
      t.failed,
      t.latencyMs.p50,
      t.latencyMs.p90,
      t.latencyMs.p99,
      t.latencyMs['p99.9'],
      t.latencyMs.max,
      ...backends.flatMap((b) => [t.backends[b] ?? 0, total ? Math.round((1000 * (t.backends[b] ?? 0)) / total) / 10 : 0]),
      ...codes.map((c) => t.errors[c] ?? 0),
      ev.join('; '),
      t.asked ?? '',
      t.late,
      notSent.get(t.second) ?? 0,
    ];
  });
  return [head, ...rows].map((r) => r.map(csvCell).join(',')).join('\n') + '\n';
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];

interface ChartSeries {
  label: string;
  data: (number | null)[];
  /** What the legend shows with no cursor on the chart (uPlot's own legend shows "--" then). */
  summary: number | null;
  stroke?: string;
  dash?: number[];
}

interface Chart {
  id: string;
  title: string;
  unit: string;
  /** Shown in the legend's x cell with no cursor: what the summary values are. */
  summaryLabel: string;
  series: ChartSeries[];
}

/** The mean of the measured seconds' values (warm-up seconds left out, as the summary leaves them out). */
function meanOf(ticks: LoadTick[], data: (number | null)[]): number | null {
  const v = data.filter((x, i) => x !== null && !ticks[i].warmup) as number[];
  return v.length ? Math.round((10 * v.reduce((a, b) => a + b, 0)) / v.length) / 10 : null;
}

/**
 * The headline: every call the run asked for, in exactly one of on time,
 * late, failed, not sent. Under overload "N ok" alone reads as health when
 * most of those replies came seconds past the deadline and most calls were
 * never sent at all.
 */
export function headline(s: LoadReport): string {
  const onTime = s.ok - s.late;
  const late = `${s.late} late (ok, but ended more than the ${s.deadlineMs} ms deadline after their ${s.mode === 'open' ? 'intended ' : ''}start)`;
  if (s.mode === 'open') return `${s.scheduled} calls asked for: ${onTime} ok on time, ${late}, ${s.failed} failed, ${s.notSent} not sent`;
  return `${s.requests} calls: ${onTime} ok on time, ${late}, ${s.failed} failed`;
}

/** JSON for a <script> element: nothing in it can close the element. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/**
 * The HTML report: one file, no network needed to open it. uPlot (its
 * minified build and CSS, read from node_modules now) and the data are
 * inlined. A headline puts every call asked for in one of on time, late,
 * failed, not sent. Charts over time: calls/s (sent, ok, failed, late, and
 * in open loop the rate asked for), latency percentiles
 * of each second, each backend's share; vertical markers for the events, the
 * warm-up shaded. `window.__meshReport` tells what was drawn (for tests).
 */
export function reportHtml(input: ReportInput): string {
  const uplotDir = path.dirname(require.resolve('uplot/dist/uPlot.iife.min.js'));
  const js = readFileSync(path.join(uplotDir, 'uPlot.iife.min.js'), 'utf8');
  const css = readFileSync(path.join(uplotDir, 'uPlot.min.css'), 'utf8');
  const backends = backendsOf(input.ticks);
  const t = input.ticks;
  // Second k covers [k-1, k) s: plotted at its middle, on the same time axis as the markers.
  const x = t.map((k) => k.second - 0.5);
  const s = input.summary;
  const share = (b: string) => t.map((k) => (k.ok + k.failed ? Math.round((1000 * (k.backends[b] ?? 0)) / (k.ok + k.failed)) / 10 : 0));
  const perSecond = (label: string, data: number[]): ChartSeries => ({ label, data, summary: meanOf(t, data) });
  const rateSeries = [perSecond('sent', t.map((k) => k.sent)), perSecond('ok', t.map((k) => k.ok)), perSecond('failed', t.map((k) => k.failed)), perSecond('late', t.map((k) => k.late))];
  const charts: Chart[] = [
    { id: 'rate', title: `calls per second${s.mode === 'open' ? ': asked for (the schedule) and achieved' : ''}`, unit: 'calls/s', summaryLabel: 'mean per second', series: rateSeries },
    {
      id: 'latency',
      title: `latency of each second\u2019s ok calls${s.mode === 'open' ? ' (from each call\u2019s intended start)' : ''}`,
      unit: 'ms',
      summaryLabel: 'whole run',
      series: (['p50', 'p90', 'p99', 'p99.9', 'max'] as const).map((p) => ({ label: p, data: t.map((k) => (k.ok ? k.latencyMs[p] : null)), summary: s.ok ? s.latencyMs[p] : null })),
    },
    { id: 'share', title: 'each backend\u2019s share of the second\u2019s calls', unit: '%', summaryLabel: 'whole run', series: backends.map((b) => ({ label: b, data: share(b), summary: s.requests ? Math.round((1000 * (s.backends[b] ?? 0)) / s.requests) / 10 : 0 })) },
  ];
  charts.forEach((c) => c.series.forEach((cs, i) => (cs.stroke = PALETTE[i % PALETTE.length])));
  // The rate asked for, dashed, in a colour no marker uses; added last so the other series keep their colours.
  if (s.mode === 'open') rateSeries.push({ ...perSecond('asked', t.map((k) => k.asked ?? 0)), stroke: '#17becf', dash: [8, 4] });
  const markers = allMarkers(input);
  const warmupS = input.summary.warmupS;
  const data = { x, charts, markers, warmupS };
  const rows: [string, string][] = [
    ['mode', s.mode === 'open' ? `open loop, ${s.schedule?.rate} calls/s` : `closed loop, ${s.concurrency} in flight`],
    ['sent', `${s.requests} in ${s.durationS} s, ${s.rps} calls/s: ${s.ok} ok (late ones included), ${s.failed} failed`],
    [s.late ? 'latency ms (ok calls, late ones included)' : 'latency ms', `p50 ${s.latencyMs.p50}  p90 ${s.latencyMs.p90}  p99 ${s.latencyMs.p99}  p99.9 ${s.latencyMs['p99.9']}  max ${s.latencyMs.max}`],
    ['warm-up', `${warmupS} s (left out of the figures)`],
    ...(s.schedule ? [['schedule', s.schedule.kept ? `kept (at most ${s.schedule.behindMaxMs} ms behind)` : `NOT kept: up to ${s.schedule.behindMaxMs} ms behind, ${s.schedule.missed} of ${s.schedule.intended} calls never sent`] as [string, string]] : []),
    ['backends', Object.entries(s.backends).sort().map(([b, n]) => `${b} ${n}`).join(', ') || '-'],
    ['errors', Object.entries(s.errors).map(([c, n]) => `${c} ${n}`).join(', ') || 'none'],
  ];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(input.title)}</title>
<style>${css}
body{font:14px system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:18px;margin:0 0 8px} h2{font-size:15px;margin:18px 0 4px}
table.sum td{padding:1px 10px 1px 0;vertical-align:top} .headline{font-weight:600;margin:6px 0} .headline.bad{color:#b00} .cmd{font-family:monospace;color:#555}
.ev{font-family:monospace;font-size:12px;white-space:pre} .ev .joined{color:#2ca02c} .ev .left{color:#d62728} .ev .resolver{color:#9467bd} .ev .event{color:#555}
</style></head><body>
<h1>${escapeHtml(input.title)}</h1>
${input.command ? `<div class="cmd">${escapeHtml(input.command)}</div>` : ''}
<p id="headline" class="headline${s.late || s.failed || s.notSent ? ' bad' : ''}">${escapeHtml(headline(s))}</p>
<table class="sum">${rows.map(([k, v]) => `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(v)}</td></tr>`).join('')}</table>
<div id="charts"></div>
<h2>events (numbered as on the charts: green joined, red left, purple resolver update, grey other)</h2><div class="ev" id="events"></div>
<script>${js}</script>
<script id="data" type="application/json">${scriptJson(data)}</script>
<script>
(function () {
  var d = JSON.parse(document.getElementById('data').textContent);
  var KIND = { joined: '#2ca02c', left: '#d62728', resolver: '#9467bd', event: '#555555' };
  function markersPlugin() {
    return { hooks: { draw: [function (u) {
      var c = u.ctx, top = u.bbox.top, h = u.bbox.height;
      c.save();
      if (d.warmupS > 0) {
        var x0 = u.valToPos(0, 'x', true), x1 = u.valToPos(d.warmupS, 'x', true);
        c.fillStyle = 'rgba(0,0,0,0.06)'; c.fillRect(x0, top, Math.max(0, x1 - x0), h);
      }
      c.font = (10 * devicePixelRatio) + 'px sans-serif';
      d.markers.forEach(function (m, i) {
        var x = u.valToPos(m.tMs / 1000, 'x', true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
        c.strokeStyle = KIND[m.kind]; c.setLineDash([4, 3]); c.lineWidth = devicePixelRatio;
        c.beginPath(); c.moveTo(x, top); c.lineTo(x, top + h); c.stroke();
        // A number only (the list below the charts names it): long texts would cover the series.
        c.fillStyle = KIND[m.kind]; c.fillText(String(i + 1), x + 2, top + 11 * devicePixelRatio * (1 + (i % 3)));
      });
      c.restore();
    }] } };
  }
  function fmt(v) {
    if (v === null || v === undefined) return '';
    return String(Math.abs(v) >= 100 ? Math.round(v) : +v.toPrecision(4));
  }
  var drawn = [];
  var width = Math.min(1100, document.body.clientWidth - 20);
  d.charts.forEach(function (ch) {
    var h = document.createElement('h2'); h.textContent = ch.title; document.getElementById('charts').appendChild(h);
    var el = document.createElement('div'); el.id = 'chart-' + ch.id; document.getElementById('charts').appendChild(el);
    var opts = {
      width: width, height: 220, plugins: [markersPlugin()],
      scales: { x: { time: false, range: function (u, lo, hi) { return [0, Math.max(1, Math.ceil(hi + 0.5))]; } } },
      axes: [{ label: 'seconds since the load began' }, { label: ch.unit, size: 60 }],
      series: [{ label: 's', value: function (u, v, si, idx) { return idx == null ? ch.summaryLabel : 'second ' + (v + 0.5); } }].concat(ch.series.map(function (s) {
        // With no cursor on the chart the legend shows the run's figure, not uPlot's "--".
        return { label: s.label, stroke: s.stroke, dash: s.dash, width: 2, spanGaps: false, value: function (u, v, si, idx) { return fmt(idx == null ? s.summary : v); } };
      }))
    };
    new uPlot(opts, [d.x].concat(ch.series.map(function (s) { return s.data; })), el);
    drawn.push({ id: ch.id, series: ch.series.map(function (s) { return { label: s.label, stroke: s.stroke, summary: s.summary, points: s.data.filter(function (v) { return v !== null; }).length }; }) });
  });
  var ev = document.getElementById('events');
  d.markers.forEach(function (m, i) {
    var div = document.createElement('div'); div.className = m.kind;
    div.textContent = String(i + 1).padStart(3) + '  ' + (m.tMs / 1000).toFixed(1).padStart(6) + ' s  ' + m.text; ev.appendChild(div);
  });
  if (!d.markers.length) ev.textContent = 'none';
  window.__meshReport = { charts: drawn, markers: d.markers.length, seconds: d.x.length };
})();
</script>
</body></html>
`;
}

/** Write atomically (a half-written report is never left under the name). */
function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

export function writeReportHtml(file: string, input: ReportInput): void {
  writeAtomic(file, reportHtml(input));
}

export function writeReportCsv(file: string, input: ReportInput): void {
  writeAtomic(file, reportCsv(input));
}
