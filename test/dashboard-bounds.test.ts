import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestEtcd, stopTestEtcd, type TestEtcd } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { freePort, waitFor } from './harness/ports';
import { encodeEndpoint } from '../balancer/endpoint-codec';

/**
 * What the registry can make `mesh dashboard` do, measured on real
 * processes (a real etcd, the built CLI, node http servers in this file):
 *
 * - `--scrape-registry`: a bad value is one line, exit 2, and --help names
 *   it; loopback (the default) reads the registry's loopback /metrics and
 *   refuses others, off reads none, the operator's --scrape always;
 * - a registration whose Metadata names a /metrics answering a 100 MB
 *   body: the target fails with `body over 4194304 bytes`, the process's
 *   peak RSS stays under 300 MB and /api/topology keeps answering; one
 *   that trickles a byte every 100 ms fails with `timed out after 1000 ms`;
 * - 2,000 registrations naming closed loopback ports: 256 are scraped (the
 *   cap; the rest are counted and logged once), failing ones back off, and
 *   after the first seconds the process uses at most 10% of a core (utime
 *   + stime over 5 s) and under 200 MB RSS.
 */

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const MiB = 1024 * 1024;
let t: Partial<TestEtcd> = {};
const servers: Server[] = [];

interface Target {
  addr: string;
  ok: boolean;
  error?: string;
  failures?: number;
  retryAt?: number;
}
interface Topology {
  services: { endpoints: unknown[] }[];
  traffic: { targets: Target[]; notScraped: { overCap: number; byPolicy: number; invalid: number }; limits: { maxTargets: number; registry: string; maxBodyBytes: number } };
}

async function topology(url: string): Promise<Topology> {
  return (await (await fetch(`${url}api/topology`, { signal: AbortSignal.timeout(5_000) })).json()) as Topology;
}

async function startDashboard(prefix: string, extra: string[] = []): Promise<{ proc: MeshProcess; url: string }> {
  const proc = new MeshProcess(['dashboard', '--etcd', t.etcd!.endpoints, '--prefix', prefix, '--listen', '127.0.0.1:0', ...extra]);
  const url = await waitFor('the dashboard URL on stdout', () => proc.stdout.find((l) => /^http:\/\/127\.0\.0\.1:\d+\/$/.test(l)), 20_000);
  return { proc, url };
}

/** A loopback http server answering /metrics with `body` (called per request), counting requests. */
async function metricsServer(answer: (res: import('node:http').ServerResponse) => void): Promise<{ addr: string; requests: () => number }> {
  let n = 0;
  const s = createServer((req, res) => {
    n++;
    answer(res);
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { addr: `127.0.0.1:${(s.address() as AddressInfo).port}`, requests: () => n };
}

/** Put key -> value pairs in transactions of 120 (etcd's --max-txn-ops is 128 by default); returns how many. */
async function putAll(pairs: [string, string][]): Promise<number> {
  let txns = 0;
  for (let i = 0; i < pairs.length; i += 120, txns++) {
    await t.client!.kv.txn({ compare: [], success: pairs.slice(i, i + 120).map(([k, v]) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(v) } })), failure: [] });
  }
  return txns;
}

/** VmRSS and VmHWM (peak) of a process, MB. */
function memory(pid: number): { rssMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)![1]);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

/** utime + stime of a process, seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) in parentheses: utime and stime are fields 14 and 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

beforeAll(async () => {
  t = await startTestEtcd(1);
});

afterAll(async () => {
  await stopTestEtcd(t, () =>
    Promise.all(
      servers.map((s) => {
        s.closeAllConnections();
        return new Promise((r) => s.close(r));
      }),
    ),
  );
});

describe('mesh dashboard bounds what the registry can make it do', () => {
  it('--scrape-registry: a bad value is one line, exit 2; loopback (default) refuses other hosts, off refuses all; --scrape is always read', async () => {
    const [bad, help] = await Promise.all([runMesh(['dashboard', '--scrape-registry', 'all', '--etcd', '127.0.0.1:1'], {}, 20_000), runMesh(['dashboard', '--help'], {}, 20_000)]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toEqual([expect.stringMatching(/^mesh: option '--scrape-registry .*' argument 'all' is invalid\. "all" is not one of off, loopback, any$/)]);
    expect(help.code).toBe(0);
    expect(help.stdout.join('\n')).toMatch(/--scrape-registry <off\|loopback\|any>/);

    const ok = 'grpc_server_handled_total{grpc_code="OK"} 1\n';
    const [named, operator] = await Promise.all([metricsServer((res) => res.end(ok)), metricsServer((res) => res.end(ok))]);
    const rec = (addr: string, metrics: string): [string, string] => [`bpol/greeter/${addr}`, encodeEndpoint(addr, { metrics })];
    await putAll([rec('10.3.0.1:50051', named.addr), rec('10.3.0.2:50051', '10.255.255.1:9100'), rec('10.3.0.3:50051', 'user@127.0.0.1:1/x')]);

    const loop = await startDashboard('bpol', ['--scrape', operator.addr]);
    const seen = await waitFor('both loopback targets scraped', async () => {
      const x = await topology(loop.url);
      return x.traffic.targets.length === 2 && x.traffic.targets.every((s) => s.ok) ? x : undefined;
    }, 10_000, 100);
    expect(seen.traffic.targets.map((s) => s.addr).sort()).toEqual([named.addr, operator.addr].sort());
    expect(seen.traffic.notScraped).toEqual({ overCap: 0, byPolicy: 1, invalid: 1 });
    expect(seen.traffic.limits.registry).toBe('loopback');
    const skipped = loop.proc.logs.filter((l) => l.event === 'dashboard.scrape_skipped').map((l) => l.reason);
    expect(skipped.sort()).toEqual(['byPolicy', 'invalid']);
    loop.proc.kill('SIGTERM');
    expect(await loop.proc.exitWithin(10_000)).toBe(0);

    const off = await startDashboard('bpol', ['--scrape', operator.addr, '--scrape-registry', 'off']);
    const [namedBefore, operatorBefore] = [named.requests(), operator.requests()];
    const x = await waitFor('the registry listed, the operator target scraped twice', async () => {
      const y = await topology(off.url);
      return y.services[0]?.endpoints.length === 3 && y.traffic.notScraped.byPolicy === 2 && y.traffic.targets.length === 1 && y.traffic.targets[0].ok && operator.requests() >= operatorBefore + 2 ? y : undefined;
    }, 10_000, 100);
    expect(x.traffic.targets[0].addr).toBe(operator.addr);
    expect(x.traffic.notScraped).toEqual({ overCap: 0, byPolicy: 2, invalid: 1 });
    expect(named.requests()).toBe(namedBefore);
    off.proc.kill('SIGTERM');
    expect(await off.proc.exitWithin(10_000)).toBe(0);
  });

  it('a /metrics answering 100 MB: the target fails with "body over 4194304 bytes", RSS stays under 300 MB, /api/topology keeps answering; a trickling one times out', async () => {
    // Lines the scraper looks for, 100 MB of them, sent as fast as the socket takes them, without a Content-Length.
    const line = 'grpc_server_handled_total{grpc_code="OK",grpc_method="SayHello",grpc_service="helloworld.Greeter",grpc_type="unary"} 1\n';
    const chunk = Buffer.from(line.repeat(Math.floor(MiB / line.length)));
    const sent: number[] = [];
    const big = await metricsServer((res) => {
      let bytes = 0;
      const write = () => {
        while (bytes < 100 * MiB) {
          bytes += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', write);
        }
        res.end();
      };
      res.on('close', () => sent.push(bytes));
      res.on('error', () => undefined);
      write();
    });
    // And one that never finishes: a byte every 100 ms.
    const trickles: NodeJS.Timeout[] = [];
    const slow = await metricsServer((res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const tm = setInterval(() => res.write('#'), 100);
      trickles.push(tm);
      res.on('close', () => clearInterval(tm));
    });
    await putAll([
      [`bbig/greeter/10.4.0.1:50051`, encodeEndpoint('10.4.0.1:50051', { metrics: big.addr })],
      [`bbig/greeter/10.4.0.2:50051`, encodeEndpoint('10.4.0.2:50051', { metrics: slow.addr })],
    ]);
    const { proc, url } = await startDashboard('bbig');
    const [failing, hung] = await waitFor('the big and the slow target failing', async () => {
      const x = await topology(url);
      const f = (addr: string) => x.traffic.targets.find((s) => s.addr === addr && !s.ok);
      return f(big.addr) && f(slow.addr) ? [f(big.addr)!, f(slow.addr)!] : undefined;
    }, 10_000, 50);
    expect(failing.error).toBe('body over 4194304 bytes');
    expect(hung.error).toBe('timed out after 1000 ms');
    // Keep asking while it is scraped again (its back-off: about 1, 2, 4 s).
    const started = Date.now();
    let slowest = 0;
    let answers = 0;
    while (Date.now() - started < 4_000 || big.requests() < 3) {
      const t0 = Date.now();
      const x = await topology(url);
      slowest = Math.max(slowest, Date.now() - t0);
      if (x.services[0].endpoints.length === 2) answers++;
      await new Promise((r) => setTimeout(r, 100));
      if (Date.now() - started > 15_000) break;
    }
    const mem = memory(proc.pid);
    console.log(`dashboard, a /metrics of 100 MB: ${big.requests()} reads, each cut after ${sent.map((b) => (b / MiB).toFixed(0)).join(', ')} MiB written by the server (socket buffers included); RSS ${mem.rssMb.toFixed(0)} MB, peak ${mem.peakMb.toFixed(0)} MB; ${answers} /api/topology answers, slowest ${slowest} ms`);
    expect(big.requests()).toBeGreaterThanOrEqual(3);
    expect(mem.peakMb).toBeLessThan(300);
    expect(Math.max(...sent)).toBeLessThan(50 * MiB);
    expect(answers).toBeGreaterThanOrEqual(10);
    expect(slowest).toBeLessThan(1_000);
    proc.kill('SIGTERM');
    expect(await proc.exitWithin(10_000)).toBe(0);
    for (const tm of trickles) clearInterval(tm);
  });

  it('2,000 registrations naming closed loopback ports: 256 scraped, backing off; at most 10% of a core and under 200 MB after the first seconds', async () => {
    const closed = await freePort();
    const pairs: [string, string][] = Array.from({ length: 2_000 }, (_, i) => {
      const addr = `10.5.${i >> 8}.${i & 255}:50051`;
      return [`b2k/greeter/${addr}`, encodeEndpoint(addr, { metrics: `127.1.${i >> 8}.${i & 255}:${closed}` })];
    });
    const wrote = Date.now();
    const txns = await putAll(pairs);
    const writeMs = Date.now() - wrote;
    const { proc, url } = await startDashboard('b2k');
    const startedAt = Date.now();
    const x = await waitFor('2,000 endpoints, 256 targets failing', async () => {
      const y = await topology(url);
      return y.services[0]?.endpoints.length === 2_000 && y.traffic.targets.length === 256 && y.traffic.targets.every((s) => !s.ok) ? y : undefined;
    }, 15_000, 200);
    expect(x.traffic.notScraped).toEqual({ overCap: 1_744, byPolicy: 0, invalid: 0 });
    expect(x.traffic.targets[0].error).toMatch(/ECONNREFUSED/);
    // The first seconds: the listing, every target's first failures. Then a 5 s window.
    await new Promise((r) => setTimeout(r, Math.max(0, startedAt + 3_000 - Date.now())));
    const cpu0 = cpuSeconds(proc.pid);
    const t0 = Date.now();
    const rss: number[] = [];
    while (Date.now() - t0 < 5_000) {
      rss.push(memory(proc.pid).rssMb);
      await new Promise((r) => setTimeout(r, 500));
    }
    const share = (cpuSeconds(proc.pid) - cpu0) / ((Date.now() - t0) / 1000);
    const after = await topology(url);
    const failures = after.traffic.targets.map((s) => s.failures ?? 0);
    const waits = after.traffic.targets.map((s) => (s.retryAt ?? 0) - Date.now());
    const capped = proc.logs.filter((l) => l.event === 'dashboard.scrape_skipped' && l.reason === 'overCap');
    const mem = memory(proc.pid);
    console.log(
      `dashboard, 2,000 registrations naming closed ports (written in ${writeMs} ms, ${txns} txns): 256 scraped, 1,744 over the cap; ${(share * 100).toFixed(1)}% of a core from ${((t0 - startedAt) / 1000).toFixed(1)} s to ${((Date.now() - startedAt) / 1000).toFixed(1)} s after start, RSS ${Math.min(...rss).toFixed(0)}-${Math.max(...rss).toFixed(0)} MB (peak ${mem.peakMb.toFixed(0)} MB); failures in a row ${Math.min(...failures)}-${Math.max(...failures)}, next try in up to ${(Math.max(...waits) / 1000).toFixed(1)} s`,
    );
    expect(share).toBeLessThanOrEqual(0.1);
    expect(Math.max(...rss)).toBeLessThan(200);
    expect(capped).toHaveLength(1);
    expect(Math.min(...failures)).toBeGreaterThanOrEqual(3);
    expect(Math.max(...waits)).toBeGreaterThan(2_000);
    proc.kill('SIGTERM');
    expect(await proc.exitWithin(10_000)).toBe(0);
  });
});
