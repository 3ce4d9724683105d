import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import puppeteer, { type Browser } from 'puppeteer-core';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess } from './harness/mesh-process';
import { waitFor } from './harness/ports';
import { encodeEndpoint } from '../balancer/endpoint-codec';

/**
 * An etcd that stops answering shows on the dashboard: with every member of
 * a real 3-member etcd SIGSTOPped (the watch stream stays open and silent,
 * as over a quiet registry), `/api/topology` says `registry.state` stale,
 * with since when, within a few seconds and keeps answering with the last
 * state; the page's header (headless Chromium) says stale; after SIGCONT
 * both say live again by themselves, and a change made then is shown (the
 * watch carried on).
 */

const PREFIX = 'dashstale';
const CHROMIUM = '/usr/bin/chromium';
let t: Partial<TestEtcd> = {};
let dir = '';
let browser: Browser | undefined;

interface Topology {
  services: { name: string; endpoints: { addr: string }[] }[];
  registry: { state: 'live' | 'stale'; staleSince: number | null; error?: string };
  watches: { registry: string };
}

async function topology(url: string): Promise<Topology> {
  const res = await fetch(`${url}api/topology`, { signal: AbortSignal.timeout(2_000) });
  return (await res.json()) as Topology;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'mesh-dash-stale-'));
  expect(existsSync(CHROMIUM), `${CHROMIUM} missing: scripts/setup.sh installs Debian's chromium`).toBe(true);
  const launching = puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${path.join(dir, 'chromium')}`],
  });
  launching.then((br) => (browser = br)).catch(() => undefined);
  t = await startTestEtcd(3);
  browser = await launching;
});

afterAll(async () => {
  // stop() sends SIGCONT before SIGKILL, so stopped members are not left behind either.
  await browser?.close().catch(() => undefined);
  await stopTestEtcd(t, () => dir && rmSync(dir, { recursive: true, force: true }));
});

describe('mesh dashboard with etcd stopped', () => {
  it('says stale (since when) in /api/topology and the header within seconds of SIGSTOP, live again by itself after SIGCONT', async () => {
    const etcd = t.etcd!;
    const client = t.client!;
    const a = '10.1.0.1:50051';
    await client.put(`${PREFIX}/greeter/${a}`).value(encodeEndpoint(a, { zone: 'z1' })).exec();
    const dash = new MeshProcess(['dashboard', '--etcd', etcd.endpoints, '--prefix', PREFIX, '--listen', '127.0.0.1:0']);
    const url = await waitFor('the dashboard URL on stdout', () => dash.stdout.find((l) => /^http:\/\/127\.0\.0\.1:\d+\/$/.test(l)), 20_000);
    await waitFor('the endpoint, live', async () => {
      const x = await topology(url);
      return x.registry.state === 'live' && x.services[0]?.endpoints.length === 1;
    }, 10_000, 100);
    const page = await browser!.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    const header = () => page.evaluate(() => document.getElementById('status')!.textContent ?? '');
    await page.waitForFunction(() => document.getElementById('status')!.textContent === 'live' && document.querySelectorAll('#endpoint-rows .endpoint').length === 1, { timeout: 10_000, polling: 50 });

    const stoppedAt = Date.now();
    for (let i = 0; i < etcd.members.length; i++) etcd.signal(i, 'SIGSTOP');
    let stale: Topology;
    let staleMs: number;
    let headerText: string;
    try {
      stale = await waitFor('registry stale', async () => {
        const x = await topology(url);
        return x.registry.state === 'stale' ? x : undefined;
      }, 10_000, 100);
      staleMs = Date.now() - stoppedAt;
      await page.waitForFunction(() => /^stale: etcd has not answered since /.test(document.getElementById('status')!.textContent ?? ''), { timeout: 5_000, polling: 50 });
      headerText = await header();
    } finally {
      for (let i = 0; i < etcd.members.length; i++) etcd.signal(i, 'SIGCONT');
    }
    const contAt = Date.now();
    const live = await waitFor('registry live again', async () => {
      const x = await topology(url);
      return x.registry.state === 'live' ? x : undefined;
    }, 20_000, 100);
    const liveMs = Date.now() - contAt;
    await page.waitForFunction(() => document.getElementById('status')!.textContent === 'live', { timeout: 5_000, polling: 50 });

    // The watch carried on: a join written now is shown.
    const b = '10.1.0.2:50051';
    await client.put(`${PREFIX}/greeter/${b}`).value(encodeEndpoint(b, null)).exec();
    await page.waitForFunction(() => document.querySelectorAll('#endpoint-rows .endpoint').length === 2, { timeout: 10_000, polling: 50 });

    console.log(`dashboard, every etcd member SIGSTOPped: /api/topology stale after ${staleMs} ms (staleSince ${stale.registry.staleSince! - stoppedAt} ms from the stop, error "${stale.registry.error}"), header "${headerText}"; live again ${liveMs} ms after SIGCONT`);
    expect(staleMs).toBeLessThanOrEqual(6_000);
    expect(stale.registry.staleSince).toBeGreaterThan(stoppedAt - 3_000);
    expect(stale.registry.staleSince).toBeLessThanOrEqual(stoppedAt + 500);
    expect(stale.registry.error).toBeTruthy();
    // The last state stands while stale.
    expect(stale.services[0].endpoints.map((e) => e.addr)).toEqual([a]);
    expect(headerText).toMatch(/^stale: etcd has not answered since \d/);
    expect(live.registry.staleSince).toBeNull();
    expect(liveMs).toBeLessThanOrEqual(10_000);
    expect(pageErrors).toEqual([]);
    await page.close();
    dash.kill('SIGTERM');
    expect(await dash.exitWithin(10_000)).toBe(0);
  });
});
