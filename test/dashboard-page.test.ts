import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { get } from 'node:http';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, REPO, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { encodeEndpoint } from '../balancer/endpoint-codec';

/**
 * `mesh dashboard` against a real 3-member etcd, in headless Chromium
 * (one etcd and one browser for the file, to keep it short):
 *
 * - bad --listen/--scrape: exit 2, one line; a non-loopback --listen warns
 *   that the page is unauthenticated;
 * - 3 greeters (--ttl 2, --metrics) and a load (--metrics, given with
 *   --scrape): the page shows the 3 endpoints and a chart with data; a
 *   SIGKILLed greeter leaves it within TTL + 2 s, a SIGTERMed one within
 *   1 s, a new one appears within 1 s of registering; every request the
 *   page makes goes to the dashboard itself (no CDN). The run's screenshot
 *   goes to .tmp/dashboard.png (MESH_DASHBOARD_SCREENSHOT=docs/dashboard.png
 *   refreshes the README's);
 * - 1,000 endpoints written straight to etcd: /api/topology lists them, the
 *   page shows them under 1 s from the data's arrival and stays
 *   responsive, and the dashboard writes nothing (etcd's revision);
 * - 10,000-character names (an election, its leader, a zone) are cut on
 *   the page with the whole text in the title, and the page stays within
 *   the viewport; Host names compare without case; a favicon, no 404;
 * - a user whose role may only read the registry gets the topology (last:
 *   it turns authentication on).
 */

const PREFIX = 'dashb';
const BIG = 'dashbig';
const SERVICE = 'greeter';
const N = 1000;
const TTL_S = 2;
const CHROMIUM = '/usr/bin/chromium';
const PW = { root: 'root-pw', reader: 'reader-pw' };
let t: Partial<TestEtcd> = {};
let dir = '';
let profile = '';
let browser: Browser | undefined;
let badRuns: Promise<{ args: string[]; r: Awaited<ReturnType<typeof runMesh>> }[]> | undefined;

interface Topology {
  revision: string;
  services: { name: string; endpoints: { addr: string; lease: string | null; weight: number; zone?: string }[] }[];
  leases: Record<string, { ttl: number }>;
  watches: { registry: string; coordination: string };
}

async function topology(url: string): Promise<Topology> {
  const res = await fetch(`${url}api/topology`);
  return (await res.json()) as Topology;
}

/** The status of GET `path` on the dashboard with this Host header. */
function statusWithHost(url: string, path: string, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    get(`${url}${path}`, { headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}

async function startDashboard(prefix: string, extra: string[] = []): Promise<{ proc: MeshProcess; url: string }> {
  const proc = new MeshProcess(['dashboard', '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--listen', '127.0.0.1:0', ...extra]);
  const url = await waitFor('the dashboard URL on stdout', () => proc.stdout.find((l) => /^http:\/\/127\.0\.0\.1:\d+\/$/.test(l)), 20_000);
  return { proc, url };
}

async function server(): Promise<{ proc: MeshProcess; addr: string; registeredAt: number }> {
  const port = await freePort();
  const proc = new MeshProcess(['server', '--port', String(port), '--etcd', t.etcd!.endpoints, '--prefix', PREFIX, '--ttl', String(TTL_S), '--metrics', '127.0.0.1:0']);
  const reg = await proc.waitForLog('registration.state', { to: 'REGISTERED' }, 20_000);
  return { proc, addr: `127.0.0.1:${port}`, registeredAt: Number(reg.time) };
}

/** Addresses of the endpoint rows on the page. */
function shown(page: Page): Promise<string[]> {
  return page.evaluate(() => [...document.querySelectorAll('#endpoint-rows .endpoint')].map((tr) => (tr as HTMLElement).dataset.addr ?? ''));
}

/** Wait until `addr` is (or is no longer) on the page; returns the page's Date.now() at that moment. */
async function untilShown(page: Page, addr: string, present: boolean, timeoutMs: number): Promise<number> {
  const h = await page.waitForFunction(
    (a: string, p: boolean) => {
      const on = [...document.querySelectorAll('#endpoint-rows .endpoint')].some((tr) => (tr as HTMLElement).dataset.addr === a);
      return on === p ? Date.now() : false;
    },
    { polling: 20, timeout: timeoutMs },
    addr,
    present,
  );
  return (await h.jsonValue()) as number;
}

/** Bad values, and non-loopback --listen against an etcd that does not answer (the warning comes first; nothing is bound). */
const BAD: string[][] = [
  ['dashboard', '--listen', 'nope'],
  ['dashboard', '--scrape', '127.0.0.1:9464,'],
  ['dashboard', '--scrape', '127.0.0.1:0'],
  ['demo', '--ui', '127.0.0.1'],
];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'mesh-dash-'));
  profile = mkdtempSync(path.join(dir, 'chromium-'));
  expect(existsSync(CHROMIUM), `${CHROMIUM} missing: scripts/setup.sh installs Debian's chromium`).toBe(true);
  // Started side by side: the flag checks, the browser and etcd.
  const dead = `127.0.0.1:${await freePort()}`;
  const cases = [...BAD.map((a) => [...a, '--etcd', '127.0.0.1:1']), ['dashboard', '--etcd', dead, '--dial-timeout', '300ms', '--listen', '0.0.0.0:0']];
  badRuns = Promise.all(cases.map(async (args) => ({ args, r: await runMesh(args, {}, 20_000) })));
  const launching = puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`],
  });
  launching.then((br) => (browser = br)).catch(() => undefined);
  t = await startTestEtcd(3);
  browser = await launching;
});

afterAll(async () => {
  await badRuns?.catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await stopTestEtcd(t, () => dir && rmSync(dir, { recursive: true, force: true }));
});

describe('mesh dashboard', () => {
  it('bad --listen / --scrape / demo --ui: exit 2, one line; a non-loopback --listen warns that the page is unauthenticated', async () => {
    const runs = await badRuns!;
    for (const { args, r } of runs.slice(0, BAD.length)) {
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toHaveLength(1);
      expect(r.stderr[0]).toMatch(new RegExp(`^mesh: option '${args[1]} .* is invalid`));
    }
    const exposed = runs[BAD.length].r;
    expect(exposed.code).toBe(1);
    expect(exposed.stderr[0]).toMatch(/^mesh: warning: the dashboard on 0\.0\.0\.0:0 is unauthenticated/);
  });

  it('shows 3 endpoints and traffic; SIGKILL leaves within TTL + 2 s, SIGTERM within 1 s, a joiner appears within 1 s', async () => {
    const [a, b, c] = await Promise.all([server(), server(), server()]);
    const loadMetrics = `127.0.0.1:${await freePort()}`;
    const load = new MeshProcess(['load', '--etcd', t.etcd!.endpoints, '--prefix', PREFIX, '--concurrency', '4', '--duration', '60s', '--metrics', loadMetrics]);
    const dash = new MeshProcess(['dashboard', '--etcd', t.etcd!.endpoints, '--prefix', PREFIX, '--listen', '127.0.0.1:0', '--scrape', loadMetrics]);
    const url = await waitFor('the dashboard URL on stdout', () => dash.stdout.find((l) => /^http:\/\/127\.0\.0\.1:\d+\/$/.test(l)), 20_000);
    const page = await browser!.newPage();
    await page.setViewport({ width: 1200, height: 800 });
    const pageErrors: string[] = [];
    const foreign: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('request', (req) => {
      if (!req.url().startsWith(url)) foreign.push(req.url());
    });
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    await page.waitForFunction(() => document.querySelectorAll('#endpoint-rows .endpoint').length === 3, { timeout: 15_000, polling: 50 });
    expect((await shown(page)).sort()).toEqual([a.addr, b.addr, c.addr].sort());
    // An election (Go's layout: NAME/<lease hex>, a proposal), a lock (the same, empty value) and a queue (2 items, 1 claimed), written while the page is open.
    const client = t.client!;
    const [el, lk] = [client.lease(30), client.lease(30)];
    const [elId, lkId] = await Promise.all([el.grant(), lk.grant()]);
    await el.put(`dash-index/${BigInt(elId).toString(16)}`).value('leader-a').exec();
    await lk.put(`dash-lock/${BigInt(lkId).toString(16)}`).value('').exec();
    await Promise.all(['items/0001', 'items/0002'].map((k) => client.put(`dash-jobs/${k}`).value('job').exec()));
    await lk.put('dash-jobs/claims/0001').value('worker-1').exec();
    const tables = await page.waitForFunction(
      () => {
        const rows = (id: string) => [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) => [...tr.children].map((td) => td.textContent));
        const e = rows('elections');
        const l = rows('locks');
        const q = rows('queues');
        // The claim is written after the items: wait for the page to have both (a CI run caught it between them).
        return e.length && l.length && q.length && q[0][2] === '1' ? { e, l, q, timeline: document.getElementById('timeline')!.textContent } : false;
      },
      { timeout: 10_000, polling: 50 },
    );
    const coord = (await tables.jsonValue()) as { e: string[][]; l: string[][]; q: string[][]; timeline: string };
    expect(coord.e[0].slice(0, 2)).toEqual(['dash-index', 'leader-a']);
    expect(coord.l[0][1]).toBe(`dash-lock/${BigInt(lkId).toString(16)}`);
    expect(coord.q[0]).toEqual(['dash-jobs', '2', '1']);
    expect(coord.timeline).toContain('election dash-index: leader-a leads');
    expect(coord.timeline).toContain('lock dash-lock taken');

    // TTL column counts down from etcd's TimeToLive; lease ids as etcdctl prints them.
    const cells = await page.evaluate(() => [...document.querySelectorAll('#endpoint-rows .endpoint')].map((tr) => [...tr.children].map((td) => td.textContent)));
    for (const row of cells) {
      expect(row[4]).toMatch(/^[0-9a-f]{16}$/);
      expect(row[6]).toMatch(/^127\.0\.0\.1:\d+$/);
    }
    await page.waitForFunction(() => [...document.querySelectorAll('#endpoint-rows .ttl')].every((td) => /^[0-2]s$/.test(td.textContent ?? '')), { timeout: 10_000, polling: 100 });

    // The chart has data: uPlot's series carry points > 0 for the backends.
    await page.waitForFunction(
      () => {
        const ch = (window as unknown as { __dash: { charts: { rps: { data: (number | null)[][] } | null } } }).__dash.charts.rps;
        return ch !== null && ch.data.length >= 4 && ch.data.slice(1).every((s) => s.some((v) => v !== null && v > 0));
      },
      { timeout: 20_000, polling: 200 },
    );
    const traffic = await page.evaluate(() => [...document.querySelectorAll('#traffic tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent)));
    console.log(`dashboard traffic table: ${JSON.stringify(traffic)}`);
    expect(traffic.length).toBe(3);

    const picks = (await (await fetch(`http://${loadMetrics}/metrics`)).text()).split('\n').filter((l) => l.startsWith('mesh_lb_picks_total'));
    console.log(`load's picks so far: ${picks.join(' ')}; picker state changes: ${JSON.stringify(load.logs.filter((l) => l.event === 'lb.endpoint_state').map((l) => `${String(l.addr ?? l.backend ?? '')} ${String(l.from)}->${String(l.to)}`))}`);
    // SIGKILL: nobody revokes the lease; the key goes when it expires.
    const killedAt = Date.now();
    a.proc.kill('SIGKILL');
    const goneA = await untilShown(page, a.addr, false, 15_000);
    const killMs = goneA - killedAt;

    // SIGTERM: the server revokes its lease first.
    const termAt = Date.now();
    b.proc.kill('SIGTERM');
    const goneB = await untilShown(page, b.addr, false, 10_000);
    const termMs = goneB - termAt;

    // A joiner: from its registration (its own log's time) to its row on the page.
    const pending = server();
    const h = await page.waitForFunction(
      (keep: string) => {
        const other = [...document.querySelectorAll('#endpoint-rows .endpoint')].map((tr) => (tr as HTMLElement).dataset.addr).find((x) => x !== keep);
        return other ? { addr: other, at: Date.now() } : false;
      },
      { polling: 20, timeout: 20_000 },
      c.addr,
    );
    const seen = (await h.jsonValue()) as { addr: string; at: number };
    const d = await pending;
    expect(seen.addr).toBe(d.addr);
    const seenD = seen.at;
    const joinMs = Math.max(0, seenD - d.registeredAt);
    console.log(`dashboard: SIGKILL left the page after ${killMs} ms (TTL ${TTL_S} s), SIGTERM after ${termMs} ms, joiner appeared ${joinMs} ms after registering`);
    expect(killMs).toBeLessThanOrEqual(TTL_S * 1000 + 2000);
    expect(termMs).toBeLessThanOrEqual(1000);
    expect(joinMs).toBeLessThanOrEqual(1000);

    // The timeline says what happened.
    await page.waitForFunction((x: string) => document.getElementById('timeline')!.textContent!.includes(`${x} joined`), { timeout: 5_000, polling: 50 }, d.addr);
    const timeline = await page.evaluate(() => document.getElementById('timeline')!.textContent ?? '');
    // SIGKILL: the lease ran out; SIGTERM: the server revoked it.
    expect(timeline).toMatch(new RegExp(`${a.addr} left greeter: its lease [0-9a-f]+ expired`));
    expect(timeline).toContain(`${b.addr} left greeter`);
    expect(timeline).not.toMatch(new RegExp(`${b.addr} left greeter: its lease`));

    expect(pageErrors).toEqual([]);
    expect(foreign).toEqual([]);
    // Let the chart show the churn, then keep a screenshot of the run.
    await page.waitForFunction((x: string) => (window as unknown as { __dash: { charts: { rps: { series: { label?: string }[] } } } }).__dash.charts.rps.series.some((s) => s.label === x), { timeout: 10_000, polling: 200 }, d.addr);
    mkdirSync(path.join(REPO, '.tmp'), { recursive: true });
    const shot = path.join(REPO, '.tmp', 'dashboard.png');
    await page.screenshot({ path: shot as `${string}.png` });
    if (process.env.MESH_DASHBOARD_SCREENSHOT) copyFileSync(shot, path.resolve(REPO, process.env.MESH_DASHBOARD_SCREENSHOT));
    await page.close();
    await Promise.all([el.revoke(), lk.revoke(), client.delete().prefix('dash-jobs/').exec()]);
    dash.kill('SIGTERM');
    expect(await dash.exitWithin(10_000)).toBe(0);
    // Quiet from here on: the next test counts etcd revisions.
    await Promise.all([load.stop(), c.proc.stop(), d.proc.stop()]);
  });

  it('1,000 endpoints: /api/topology lists them, the page renders them within a bound and stays responsive; nothing is written', async () => {
    const client = t.client!;
    const lease = client.lease(120, { autoKeepAlive: false });
    const leaseId = await lease.grant();
    const addrs = Array.from({ length: N }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.1:${50_000 + (i % 1000)}`);
    for (let i = 0; i < N; i += 100) {
      await Promise.all(addrs.slice(i, i + 100).map((a, j) => lease.put(`${BIG}/${SERVICE}/${a}`).value(encodeEndpoint(a, { weight: 1 + ((i + j) % 100), zone: `z${(i + j) % 3}` })).exec()));
    }
    const revBefore = (await client.kv.range({ key: Buffer.from(BIG) })).header.revision;

    const { proc, url } = await startDashboard(BIG);
    const topo = await waitFor('1,000 endpoints in /api/topology', async () => {
      const x = await topology(url);
      return x.services[0]?.endpoints.length === N && Object.keys(x.leases).length === 1 ? x : undefined;
    }, 15_000, 100);
    expect(topo.services.map((s) => s.name)).toEqual([SERVICE]);
    // On loopback it answers only to a loopback Host: a rebound DNS name gets nothing.
    expect(await statusWithHost(url, 'api/topology', 'mesh.attacker.example')).toBe(403);
    expect(topo.services[0].endpoints[0].lease).toBe(BigInt(leaseId).toString(16).padStart(16, '0'));
    expect(topo.leases[topo.services[0].endpoints[0].lease!].ttl).toBeGreaterThan(100);

    const page = await browser!.newPage();
    await page.setViewport({ width: 1200, height: 800 });
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    const t0 = Date.now();
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    await page.waitForFunction((n: number) => document.querySelectorAll('#endpoint-rows .endpoint').length === n, { timeout: 15_000, polling: 'raf' }, N);
    const loadedMs = Date.now() - t0;
    expect(pageErrors).toEqual([]);
    type Perf = { firstShownMs: number; firstRenderMs: number; firstFrameMs: number };
    await page.waitForFunction(() => (window as unknown as { __dash: { perf: Perf } }).__dash.perf.firstShownMs !== null, { timeout: 10_000 });
    const perf = (await page.evaluate(() => (window as unknown as { __dash: { perf: Perf } }).__dash.perf)) as Perf;
    // Responsive: a frame is drawn promptly while the TTLs of 1,000 rows count down, and a change is shown at once.
    const frameMs = (await page.evaluate(
      () =>
        new Promise<number>((resolve) => {
          const s = performance.now();
          requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - s)));
        }),
    )) as number;
    const gone = addrs[500];
    const delAt = Date.now();
    await client.delete().key(`${BIG}/${SERVICE}/${gone}`).exec();
    await page.waitForFunction((a: string) => ![...document.querySelectorAll('#endpoint-rows .endpoint')].some((tr) => (tr as HTMLElement).dataset.addr === a), { timeout: 10_000, polling: 20 }, gone);
    const updateMs = Date.now() - delAt;
    console.log(`dashboard, ${N} endpoints: topology received -> ${N} rows on screen ${perf.firstShownMs.toFixed(1)} ms (building the rows ${perf.firstRenderMs.toFixed(1)} ms, with the charts ${perf.firstFrameMs.toFixed(1)} ms), page opened -> ${N} rows ${loadedMs} ms, two frames ${frameMs.toFixed(1)} ms, a delete shown after ${updateMs} ms`);
    // The requirement is under 1 s from data to screen; the page's own start-up (a new renderer, uPlot) comes on top and is bounded loosely for a loaded machine.
    expect(perf.firstShownMs).toBeLessThan(1000);
    expect(loadedMs).toBeLessThan(10_000);
    expect(frameMs).toBeLessThan(1000);
    expect(updateMs).toBeLessThan(2000);

    // Read-only: everything since the listing is our own delete; the dashboard wrote nothing.
    const revAfter = (await client.kv.range({ key: Buffer.from(BIG) })).header.revision;
    expect(BigInt(revAfter)).toBe(BigInt(revBefore) + 1n);
    await page.close();
    proc.kill('SIGTERM');
    expect(await proc.exitWithin(10_000)).toBe(0);
  });

  it('10,000-character names: cut, whole in the title, the page within the viewport; Host compares without case; a favicon, no 404', async () => {
    const client = t.client!;
    const zone = `z${'o'.repeat(9_999)}`;
    const election = `dash-long-${'e'.repeat(9_990)}`;
    const leader = `leader-${'v'.repeat(9_993)}`;
    const addr = '10.9.9.9:50051';
    const lease = client.lease(30);
    const id = await lease.grant();
    await client.put(`dashlong/${SERVICE}/${addr}`).value(encodeEndpoint(addr, { zone })).exec();
    await lease.put(`${election}/${BigInt(id).toString(16)}`).value(leader).exec();
    const { proc, url } = await startDashboard('dashlong');
    try {
      const port = new URL(url).port;
      // Host names compare without case (RFC 9110); a foreign name is still refused.
      expect(await statusWithHost(url, 'api/topology', `LOCALHOST:${port}`)).toBe(200);
      expect(await statusWithHost(url, '', 'LocalHost')).toBe(200);
      expect(await statusWithHost(url, 'api/topology', `MESH.attacker.example:${port}`)).toBe(403);
      const icon = await fetch(`${url}favicon.ico`);
      expect(icon.status).toBe(200);
      expect(icon.headers.get('content-type')).toBe('image/svg+xml');
      expect(await icon.text()).toMatch(/^<svg /);

      const page = await browser!.newPage();
      await page.setViewport({ width: 1200, height: 800 });
      const failed: string[] = [];
      page.on('response', (r) => {
        if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`);
      });
      await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
      await page.waitForFunction(() => document.querySelectorAll('#endpoint-rows .endpoint').length === 1 && document.querySelectorAll('#elections tbody tr').length === 1, { timeout: 15_000, polling: 50 });
      const m = await page.evaluate(() => {
        const right = (sel: string) => [...document.querySelectorAll(sel)].map((e) => Math.ceil(e.getBoundingClientRect().right));
        const row = document.querySelector('#endpoint-rows .endpoint')!;
        const e = document.querySelector('#elections tbody tr')!;
        return {
          viewport: window.innerWidth,
          pageWidth: document.documentElement.scrollWidth,
          rights: [...right('table'), ...right('#endpoints'), ...right('section'), ...right('#elections td')],
          zoneTitle: (row.children[3] as HTMLElement).title,
          zoneWidth: row.children[3].getBoundingClientRect().width,
          nameTitle: (e.children[0] as HTMLElement).title,
          leaderTitle: (e.children[1] as HTMLElement).title,
          nameText: e.children[0].textContent,
          favicon: (document.querySelector('link[rel=icon]') as HTMLLinkElement | null)?.href ?? null,
        };
      });
      console.log(`dashboard, 10,000-character names: page ${m.pageWidth} px wide in a ${m.viewport} px viewport, widest box ends at ${Math.max(...m.rights)} px, zone cell ${m.zoneWidth.toFixed(0)} px`);
      expect(m.pageWidth).toBeLessThanOrEqual(m.viewport);
      for (const r of m.rights) expect(r).toBeLessThanOrEqual(m.viewport);
      expect(m.zoneTitle).toBe(zone);
      expect(m.nameTitle).toBe(election);
      expect(m.nameText).toBe(election);
      expect(m.leaderTitle).toBe(leader);
      expect(m.favicon).toBe(`${url}favicon.svg`);
      // The favicon the page links is served too (headless Chromium may never ask for it by itself).
      expect(await page.evaluate(async (u: string) => (await fetch(u)).status, m.favicon!)).toBe(200);
      expect(failed).toEqual([]);
      await page.close();
    } finally {
      await lease.revoke();
      await client.delete().prefix('dashlong/').exec();
      proc.kill('SIGTERM');
    }
    expect(await proc.exitWithin(10_000)).toBe(0);
  });

  it('serves the topology to a user whose role may only read the registry', async () => {
    const ctl = (...args: string[]) => t.etcd!.etcdctl(args);
    await ctl('user', 'add', `root:${PW.root}`);
    await ctl('user', 'grant-role', 'root', 'root');
    await ctl('role', 'add', 'dash-reader');
    await ctl('role', 'grant-permission', 'dash-reader', '--prefix=true', 'read', `${BIG}/${SERVICE}/`);
    await ctl('user', 'add', `reader:${PW.reader}`);
    await ctl('user', 'grant-role', 'reader', 'dash-reader');
    await ctl('auth', 'enable');
    const { proc, url } = await startDashboard(BIG, ['--service', SERVICE, '--user', `reader:${PW.reader}`]);
    const topo = await waitFor('the registry, and the coordination watch refused', async () => {
      const x = await topology(url);
      return x.services[0]?.endpoints.length === N - 1 && x.watches.coordination === 'DENIED' && Object.keys(x.leases).length === 1 ? x : undefined;
    }, 15_000, 100);
    expect(topo.watches.registry).toBe('WATCHING');
    // etcd 3.4 answers TimeToLive to a read-only user too: the TTL column works for it.
    expect(Object.values(topo.leases)[0].ttl).toBeGreaterThan(60);
    proc.kill('SIGTERM');
    expect(await proc.exitWithin(10_000)).toBe(0);
    // Without --service the reader may not read the whole prefix: one line, exit 1.
    const denied = await runMesh(['dashboard', '--etcd', t.etcd!.endpoints, '--prefix', BIG, '--listen', '127.0.0.1:0', '--user', `reader:${PW.reader}`], {}, 20_000);
    expect(denied.code).toBe(1);
    expect(denied.stderr.filter((l) => !l.startsWith('{'))).toEqual([expect.stringMatching(/^mesh: etcd user "reader" may not read dashbig\/ \(permission denied\)/)]);
  });
});
