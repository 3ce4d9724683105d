import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import puppeteer, { type Browser } from 'puppeteer-core';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess } from './harness/mesh-process';
import { freePort } from './harness/ports';

/**
 * `mesh load --report/--csv` over a kill-and-join run against a real etcd:
 * greeter A is SIGKILLed and C joins while the load runs. The CSV has one
 * row per second with the events; the HTML report, opened from disk in
 * headless Chromium with every network request refused, draws its three
 * charts with data (pixels of each series' colour on the canvases) and the
 * markers. MESH_REPORT_SCREENSHOT=path saves the page (docs/load-report.png).
 */

const PREFIX = 'loadreport';
const CHROMIUM = '/usr/bin/chromium';
let t: Partial<TestEtcd> = {};
let dir = '';
let browser: Browser | undefined;

async function server(): Promise<{ proc: MeshProcess; addr: string }> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', PREFIX, '--ttl', '2']);
  await proc.waitForLog('server.state', { to: 'SERVING' });
  return { proc, addr: `127.0.0.1:${port}` };
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
    const profile = mkdtempSync(path.join(dir, 'chromium-'));
    const launching = puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`],
    });
    launching.then((br) => (browser = br)).catch(() => undefined);
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
      const page = await browser.newPage();
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
});
