import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from '../core/logger';
import { isLoopbackHost } from './dashboard-loopback';

/** Where the page's own files are: dashboard/public/ of the package, from sources (dashboard/) and from dist/dashboard/ alike. */
export function publicDir(): string {
  const candidates = [path.resolve(__dirname, 'public'), path.resolve(__dirname, '..', '..', 'dashboard', 'public')];
  const dir = candidates.find((d) => existsSync(path.join(d, 'index.html')));
  if (!dir) throw new Error(`the dashboard's page is missing (looked in ${candidates.join(', ')})`);
  return dir;
}

interface Asset {
  type: string;
  body: Buffer;
}

/** The page, its script and style, and uPlot from node_modules: read once, served from memory (no CDN: there may be no internet). */
function loadAssets(): Map<string, Asset> {
  const dir = publicDir();
  const uplot = path.dirname(require.resolve('uplot/dist/uPlot.iife.min.js'));
  const files: [string, string, string][] = [
    ['/', path.join(dir, 'index.html'), 'text/html; charset=utf-8'],
    ['/app.js', path.join(dir, 'app.js'), 'text/javascript; charset=utf-8'],
    ['/app.css', path.join(dir, 'app.css'), 'text/css; charset=utf-8'],
    ['/uplot.js', path.join(uplot, 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
    ['/uplot.css', path.join(uplot, 'uPlot.min.css'), 'text/css; charset=utf-8'],
    // The page links /favicon.svg; /favicon.ico is what browsers (and tools) ask for unprompted: both answer, so nothing 404s.
    ['/favicon.svg', path.join(dir, 'favicon.svg'), 'image/svg+xml'],
    ['/favicon.ico', path.join(dir, 'favicon.svg'), 'image/svg+xml'],
  ];
  return new Map(files.map(([url, file, type]) => [url, { type, body: readFileSync(file) }]));
}

/** One server-sent event. */
export interface PushedEvent {
  event: string;
  data: unknown;
}

/** What the HTTP side needs from the dashboard. */
export interface DashboardSource {
  /** The whole state as `/api/topology` returns it. */
  topology(): unknown;
  /** The events a page that just connected gets first (the whole state). */
  initialEvents(): PushedEvent[];
}

const HEARTBEAT_MS = 15_000;
/** A page that reads this far behind (bytes queued) is dropped; it reconnects and gets the whole state afresh. */
const MAX_BACKLOG = 16 * 1024 * 1024;

/**
 * The dashboard's HTTP face (node:http): `/` the page, its assets,
 * `/api/topology` (JSON), `/api/events` (server-sent events: the whole
 * state on connect, then every change as it is pushed; a comment line every
 * 15 s keeps proxies from closing an idle stream). GET only. Read-only:
 * nothing here writes anywhere. close() ends every stream and connection;
 * idempotent.
 */
export class DashboardHttp {
  private readonly server: Server;
  private readonly assets = loadAssets();
  private readonly streams = new Set<ServerResponse>();
  private readonly heartbeat: NodeJS.Timeout;
  private closing: Promise<void> | undefined;
  private bound = '';
  private loopbackOnly = true;

  constructor(
    private readonly source: DashboardSource,
    private readonly log: Logger,
  ) {
    this.server = createServer((req, res) => this.handle(req, res));
    this.heartbeat = setInterval(() => {
      for (const s of this.streams) s.write(': heartbeat\n\n');
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** host:port as bound (port 0 resolved), valid after listen(). */
  get addr(): string {
    return this.bound;
  }

  get clients(): number {
    return this.streams.size;
  }

  listen(host: string, port: number): Promise<string> {
    this.loopbackOnly = isLoopbackHost(host);
    return new Promise((resolve, reject) => {
      const shown = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      const onError = (err: Error) => reject(new Error(`cannot serve the dashboard on ${shown}: ${err.message}`));
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.removeListener('error', onError);
        const a = this.server.address();
        const p = a && typeof a === 'object' ? a.port : port;
        this.bound = host.includes(':') ? `[${host}]:${p}` : `${host}:${p}`;
        resolve(this.bound);
      });
    });
  }

  /** Push one event to every open page. */
  push(ev: PushedEvent): void {
    if (this.streams.size === 0) return;
    const frame = sseFrame(ev);
    for (const s of this.streams) {
      if (s.writableLength > MAX_BACKLOG) {
        this.log.warn({ event: 'dashboard.page_dropped', backlog: s.writableLength }, 'a page stopped reading its events; dropping it');
        this.streams.delete(s);
        s.destroy();
        continue;
      }
      s.write(frame);
    }
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      clearInterval(this.heartbeat);
      for (const s of this.streams) s.end();
      this.streams.clear();
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closing;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = (req.url ?? '/').split('?')[0];
    if (this.loopbackOnly && !isLoopbackHost(req.headers.host)) {
      // DNS rebinding: a web page elsewhere whose name now points at 127.0.0.1 must not read the mesh through a browser.
      res.writeHead(403, { 'content-type': 'text/plain' }).end('the dashboard on a loopback address answers only to a loopback Host (localhost, 127.0.0.1, [::1])\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('the dashboard is read-only: GET only\n');
      return;
    }
    const common = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' };
    const asset = this.assets.get(url === '/index.html' ? '/' : url);
    if (asset) {
      res.writeHead(200, { ...common, 'content-type': asset.type, 'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'" }).end(req.method === 'HEAD' ? undefined : asset.body);
      return;
    }
    if (url === '/api/topology') {
      res.writeHead(200, { ...common, 'content-type': 'application/json' }).end(JSON.stringify(this.source.topology()));
      return;
    }
    if (url === '/api/events') {
      res.writeHead(200, { ...common, 'content-type': 'text/event-stream', connection: 'keep-alive' });
      res.write('retry: 1000\n\n');
      for (const ev of this.source.initialEvents()) res.write(sseFrame(ev));
      this.streams.add(res);
      this.log.debug({ event: 'dashboard.page_connected', clients: this.streams.size }, 'a page connected');
      req.on('close', () => this.streams.delete(res));
      return;
    }
    res.writeHead(404, { ...common, 'content-type': 'text/plain' }).end('not found\n');
  }
}

function sseFrame(ev: PushedEvent): string {
  // JSON has no raw newlines, so one data: line carries it whole.
  return `event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`;
}
