import { Agent, request } from 'node:http';

/** Largest /metrics body read by default: prom-client's output for a busy mesh process is tens of KiB. */
export const DEFAULT_MAX_SCRAPE_BYTES = 4 * 1024 * 1024;

export interface ScrapeReadOptions {
  /** The whole read (connect, headers, body) is abandoned after this (ms). */
  timeoutMs: number;
  /** A body larger than this is not read: the connection is dropped at the first byte past it. */
  maxBytes: number;
  /** Keep-alive connections, one per target (Prometheus does the same). */
  agent: Agent;
}

/** `host:port` or `[v6]:port` → the parts node:http takes. */
function splitHostPort(addr: string): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(addr);
  if (v6) return { host: v6[1], port: Number(v6[2]) };
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

/** A keep-alive agent for scrapes: at most one connection per target, idle ones kept for the next round. */
export function scrapeAgent(maxTargets: number): Agent {
  return new Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: Math.max(1, maxTargets) });
}

/**
 * GET http://<addr>/metrics, bounded in time and size because the address
 * comes from the registry, which anyone with write access to it fills:
 * resolves with the body as text, or rejects with an Error whose message
 * says what went wrong in a few words (`timed out after 1000 ms`,
 * `body over 4194304 bytes`, `HTTP 404`, `connect ECONNREFUSED ...`).
 * Every way out destroys the request, so no socket, timer or buffer
 * outlives the call.
 */
export function readMetrics(addr: string, opts: ScrapeReadOptions): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const { host, port } = splitHostPort(addr);
    let settled = false;
    const chunks: Buffer[] = [];
    let size = 0;
    const req = request({ host, port, path: '/metrics', method: 'GET', agent: opts.agent, headers: { accept: 'text/plain; version=0.0.4', 'accept-encoding': 'identity' } });
    const fail = (message: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      chunks.length = 0;
      req.destroy();
      reject(new Error(message));
    };
    const timer = setTimeout(() => fail(`timed out after ${opts.timeoutMs} ms`), opts.timeoutMs);
    req.on('error', (err) => fail(err.message));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 299) return fail(`HTTP ${status}`);
      const declared = Number(res.headers['content-length']);
      if (declared > opts.maxBytes) return fail(`body over ${opts.maxBytes} bytes (Content-Length ${declared})`);
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        size += chunk.length;
        if (size > opts.maxBytes) return fail(`body over ${opts.maxBytes} bytes`);
        chunks.push(chunk);
      });
      res.on('error', (err) => fail(err.message));
      res.on('close', () => {
        if (!res.complete) fail('connection closed before the body ended');
      });
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(Buffer.concat(chunks, size).toString('utf8'));
      });
    });
    req.end();
  });
}
