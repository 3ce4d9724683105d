import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { freePort } from './harness/ports';

/**
 * `mesh load --report/--csv` over a kill-and-join run against a real etcd:
 * greeter A is SIGKILLed and C joins while the load runs. The CSV has one
 * row per second with the events; the HTML report, opened from disk in
 * headless Chromium with every network request refused, draws its three
 * charts with data (pixels of each series' colour on the canvases) and the
 * markers. MESH_REPORT_SCREENSHOT=path saves the page (docs/load-report.png).
 *
 * And an overloaded open loop (a rate this client cannot start, against two
 * real greeters): the JSON, the CSV and the page account for every call
 * asked for (on time, late, failed, not sent), the calls/s chart draws the
 * rate asked for, and no legend reads "--".
 */

const PREFIX = 'loadreport';
const CHROMIUM = '/usr/bin/chromium';
let t: Partial<TestEtcd> = {};
let dir = '';
let browser: Browser | undefined;

async function server(prefix = PREFIX): Promise<{ proc: MeshProcess; addr: string }> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--ttl', '2']);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return { proc, addr: `127.0.0.1:${port}` };
}

/** Headless Chromium with a profile of its own under `dir` (started early: it takes seconds on a busy machine). */
function launchBrowser(): { launching: Promise<Browser>; profile: string } {
  const profile = mkdtempSync(path.join(dir, 'chromium-'));
  const launching = puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`],
  });
  launching.then((br) => (browser = br)).catch(() => undefined);
  return { launching, profile };
}

/** The report opened from disk with every network request refused; resolves once its script has drawn the charts. */
async function openReport(br: Browser, html: string): Promise<{ page: Page; refused: string[]; pageErrors: string[] }> {
  const page = await br.newPage();
  await page.setViewport({ width: 1200, height: 1000 });
  const refused: string[] = [];
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.setRequestInterception(true);
  page.on('request', (req) => {
    if (req.url().startsWith('file:') || req.url().startsWith('data:')) void req.continue();
    else {
      refused.push(req.url());
      void req.abort();
    }
  });
  await page.goto(pathToFileURL(html).href, { waitUntil: 'load', timeout: 30_000 });
  await page.waitForFunction('window.__meshReport !== undefined', { timeout: 15_000 });
  return { page, refused, pageErrors };
}

function csvRows(file: string): { head: string[]; rows: Record<string, string>[] } {
  const [head, ...rows] = readFileSync(file, 'utf8').trim().split('\n');
  const cols = head.split(',');
  // No cell of these runs holds a comma (events are quoted only when they do).
  return { head: cols, rows: rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i], v]))) };
}

beforeAll(async () => {
  t = await startTestEtcd(1);
  dir = mkdtempSync(path.join(tmpdir(), 'mesh-report-'));
});

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await stopTestEtcd(t, () => dir && rmSync(dir, { recursive: true, force: true }));
});

describe('mesh load --report / --csv', () => {
  it('charts a kill-and-join run: calls/s, latency percentiles, backend shares, markers; self-contained', async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} missing: scripts/setup.sh installs Debian's chromium`).toBe(true);
    // The browser starts while the load runs (it takes seconds on a busy machine).
    const { launching, profile } = launchBrowser();
    const [a, b] = await Promise.all([server(), server()]);
    const html = path.join(dir, 'report.html');
    const csv = path.join(dir, 'report.csv');
    const load = new MeshProcess(['load', '--etcd', t.etcd!.endpoints, '--prefix', PREFIX, '--rate', '200', '--duration', '6s', '--warmup', '500ms', '--json', '--report', html, '--csv', csv]);
    await load.waitForLog('load.phase', { to: 'measuring' }, 20_000);
    await new Promise((r) => setTimeout(r, 1000));
    a.proc.kill('SIGKILL');
    await a.proc.exited;
    const c = await server();
    expect(await load.exitWithin(30_000)).toBe(0);
    const summary = JSON.parse(load.stdout[load.stdout.length - 1]) as { backends: Record<string, number> };
    expect(Object.keys(summary.backends).sort()).toEqual([a.addr, b.addr, c.addr].sort());

    // CSV: one row per second, the same series, the events in their second.
    const [head, ...rows] = readFileSync(csv, 'utf8').trim().split('\n');
    expect(head.split(',').slice(0, 10)).toEqual(['second', 'warmup', 'sent', 'ok', 'failed', 'p50_ms', 'p90_ms', 'p99_ms', 'p99.9_ms', 'max_ms']);
    for (const addr of [a.addr, b.addr, c.addr]) expect(head).toContain(`share_pct:${addr}`);
    expect(rows.length).toBeGreaterThanOrEqual(5);
    expect(rows.map((r) => Number(r.split(',')[0]))).toEqual(rows.map((_, i) => i + 1));
    const csvText = rows.join('\n');
    expect(csvText).toContain(`${a.addr} left`);
    expect(csvText).toContain(`${c.addr} joined`);
    expect(csvText).toMatch(/resolver: \d endpoints/);

    // HTML: nothing it loads comes from the network (script and CSS inlined).
    const page0 = readFileSync(html, 'utf8');
    expect(page0).not.toMatch(/<(script|link|img)[^>]+(src|href)=/i);

    browser = await launching;
    try {
      const { page, refused, pageErrors } = await openReport(browser, html);
      expect(pageErrors).toEqual([]);
      expect(refused).toEqual([]);
      const drawn = (await page.evaluate('window.__meshReport')) as { charts: { id: string; series: { label: string; stroke: string; points: number }[] }[]; markers: number };
      expect(drawn.charts.map((ch) => ch.id)).toEqual(['rate', 'latency', 'share']);
      expect(drawn.markers).toBeGreaterThanOrEqual(4);
      const share = drawn.charts.find((ch) => ch.id === 'share')!;
      expect(share.series.map((s) => s.label).sort()).toEqual([a.addr, b.addr, c.addr].sort());

      // Pixels: on each chart's canvas, count the pixels drawn in each series' colour.
      const pixels = (await page.evaluate(`(() => {
        const hex = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
        return window.__meshReport.charts.map((ch) => {
          const cv = document.querySelector('#chart-' + ch.id + ' canvas');
          const img = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
          return ch.series.map((s) => {
            const [r, g, b] = hex(s.stroke);
            let n = 0;
            for (let i = 0; i < img.length; i += 4) if (Math.abs(img[i] - r) < 24 && Math.abs(img[i + 1] - g) < 24 && Math.abs(img[i + 2] - b) < 24 && img[i + 3] > 200) n++;
            return n;
          });
        });
      })()`)) as number[][];
      console.log(`report pixels per series: ${JSON.stringify(Object.fromEntries(drawn.charts.map((ch, i) => [ch.id, Object.fromEntries(ch.series.map((s, j) => [s.label, pixels[i][j]]))])))}`);
      // calls/s: ok (drawn over sent where they agree); latency: p50 and max; shares: every backend, C included.
      expect(pixels[0][1]).toBeGreaterThan(100);
      expect(pixels[1][0]).toBeGreaterThan(100);
      expect(pixels[1][4]).toBeGreaterThan(100);
      for (const n of pixels[2]) expect(n).toBeGreaterThan(50);
      if (process.env.MESH_REPORT_SCREENSHOT) await page.screenshot({ path: process.env.MESH_REPORT_SCREENSHOT as `${string}.png`, fullPage: true });
    } finally {
      await browser.close();
      browser = undefined;
      rmSync(profile, { recursive: true, force: true });
    }
  });

  it('under overload, accounts for every call asked for (on time, late, failed, not sent) in the JSON, the CSV and the page; charts the rate asked for; legends show values', async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} missing: scripts/setup.sh installs Debian's chromium`).toBe(true);
    const { launching, profile } = launchBrowser();
    const prefix = 'loadoverload';
    await Promise.all([server(prefix), server(prefix)]);
    const html = path.join(dir, 'overload.html');
    const csv = path.join(dir, 'overload.csv');
    // 20 000 calls/s is several times what one client process starts on this
    // machine: the schedule cannot be kept, calls go out seconds late (their
    // replies are late) and the tail is never sent.
    const RATE = 20_000;
    const DEADLINE_MS = 1000;
    const r = await runMesh(['load', '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--rate', String(RATE), '--duration', '3s', '--deadline', '1s', '--json', '--report', html, '--csv', csv], {}, 60_000);
    const last = r.stdout[r.stdout.length - 1];
    expect(last, r.stderr.slice(-5).join('\n')).toMatch(/^\{/);
    // Exit 1 only when no call at all succeeded (a figure of the run, checked below).
    expect([0, 1]).toContain(r.code);
    const s = JSON.parse(last) as {
      requests: number; ok: number; failed: number; scheduled: number; notSent: number; late: number; deadlineMs: number;
      latencyMs: { max: number };
      schedule: { intended: number; sent: number; missed: number; kept: boolean };
    };
    console.log(`overload figures: ${JSON.stringify({ scheduled: s.scheduled, requests: s.requests, ok: s.ok, late: s.late, failed: s.failed, notSent: s.notSent, latencyMs: s.latencyMs, schedule: s.schedule })}`);
    expect(s.schedule.kept).toBe(false);
    expect(s.scheduled).toBeGreaterThanOrEqual(RATE * 3 - 1);
    expect(s.scheduled).toBeLessThanOrEqual(RATE * 3 + 1);
    // Every call asked for is sent or not sent; every call sent is ok or failed; late ones are among the ok.
    expect(s.requests + s.notSent).toBe(s.scheduled);
    expect(s.ok + s.failed).toBe(s.requests);
    expect(s.scheduled).toBe(s.schedule.intended);
    expect(s.requests).toBe(s.schedule.sent);
    expect(s.notSent).toBe(s.schedule.missed);
    expect(s.notSent).toBeGreaterThan(0);
    expect(s.deadlineMs).toBe(DEADLINE_MS);
    expect(s.late).toBeGreaterThanOrEqual(0);
    expect(s.late).toBeLessThanOrEqual(s.ok);
    // late agrees with the ok calls' latency from their intended start.
    if (s.ok > 0 && s.latencyMs.max > DEADLINE_MS + 1) expect(s.late).toBeGreaterThan(0);
    if (s.latencyMs.max < DEADLINE_MS - 1) expect(s.late).toBe(0);

    // CSV: the old columns where they were, the new ones appended; per second they add up to the summary.
    const { head, rows } = csvRows(csv);
    expect(head.slice(0, 10)).toEqual(['second', 'warmup', 'sent', 'ok', 'failed', 'p50_ms', 'p90_ms', 'p99_ms', 'p99.9_ms', 'max_ms']);
    expect(head.slice(-4)).toEqual(['events', 'asked', 'late', 'not_sent']);
    // Seconds 1-3 hold the schedule; a fourth when the client, behind, was still starting calls in it.
    expect(rows.map((row) => Number(row.second))).toEqual(rows.map((_, i) => i + 1));
    expect(rows.length).toBeGreaterThanOrEqual(3);
    const sum = (col: string) => rows.reduce((a, row) => a + Number(row[col]), 0);
    rows.forEach((row, i) => expect(Math.abs(Number(row.asked) - (i < 3 ? RATE : 0))).toBeLessThanOrEqual(1));
    expect(sum('asked')).toBe(s.scheduled);
    expect(sum('not_sent')).toBe(s.notSent);
    // Seconds after the last one of the schedule (calls still ending) are not rows: at most the summary's.
    expect(sum('late')).toBeLessThanOrEqual(s.late);
    expect(sum('ok')).toBeLessThanOrEqual(s.ok);

    browser = await launching;
    try {
      const { page, refused, pageErrors } = await openReport(browser, html);
      expect(pageErrors).toEqual([]);
      expect(refused).toEqual([]);
      const seen = (await page.evaluate(`(() => ({
        headline: (document.getElementById('headline') || document.querySelector('table.sum')).textContent,
        legends: [...document.querySelectorAll('.u-legend')].map((l) => [...l.querySelectorAll('tr')].map((tr) => tr.textContent.trim())),
        values: [...document.querySelectorAll('.u-legend .u-value')].map((v) => v.textContent),
        report: window.__meshReport,
      }))()`)) as { headline: string; legends: string[][]; values: string[]; report: { charts: { id: string; series: { label: string; points: number; summary: number | null }[] }[] } };
      console.log(`overload headline: ${seen.headline}`);
      console.log(`overload legends: ${JSON.stringify(seen.legends)}`);
      // The headline names each part, with the summary's counts.
      expect(seen.headline).toContain(`${s.notSent} not sent`);
      expect(seen.headline).toContain(`${s.late} late`);
      expect(seen.headline).toContain(`${s.ok - s.late} ok on time`);
      expect(seen.headline).toContain(`${s.failed} failed`);
      expect(seen.headline).toContain(`${s.scheduled}`);
      // Legends: one per chart, a value in every cell (uPlot's own shows "--" with no cursor).
      expect(seen.legends).toHaveLength(3);
      expect(seen.values.length).toBeGreaterThanOrEqual(3 + 5 + 2 + 3);
      expect(seen.values.filter((v) => v.includes('--'))).toEqual([]);
      expect(seen.legends.flat().join(' ')).not.toContain('--');
      // The calls/s chart draws the rate asked for beside the rates achieved; its legend reads the mean asked.
      const rate = seen.report.charts.find((ch) => ch.id === 'rate')!;
      expect(rate.series.map((x) => x.label)).toEqual(['sent', 'ok', 'failed', 'late', 'asked']);
      const asked = rate.series.find((x) => x.label === 'asked')!;
      expect(asked.points).toBe(rows.length);
      // Its legend, with no cursor, reads the mean asked per measured second (a fourth second asked for none).
      const meanAsked = sum('asked') / rows.length;
      expect(Math.abs(asked.summary! - meanAsked)).toBeLessThanOrEqual(0.1);
      expect(seen.legends[0].some((cell) => cell.startsWith('asked') && Math.abs(Number(cell.slice('asked'.length)) - meanAsked) <= 1)).toBe(true);
    } finally {
      await browser.close();
      browser = undefined;
      rmSync(profile, { recursive: true, force: true });
    }
  });
});
