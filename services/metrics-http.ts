import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { componentLogger } from '../core/logger';

/** A `/metrics` endpoint serving one Registry in the Prometheus text format. */
export class MetricsHttpServer {
  private readonly server: Server;
  private readonly log = componentLogger('metrics');
  private closing: Promise<void> | undefined;
  private boundAddr = '';

  constructor(private readonly registry: Registry) {
    this.server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
        return;
      }
      this.registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body))
        .catch((err: unknown) => {
          this.log.warn({ event: 'metrics.render_failed', err: String(err) }, 'could not render metrics');
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`);
        });
    });
    // A scrape must never hold the process open at exit.
    this.server.unref();
  }

  /** `host:port` as bound (port 0 resolved), valid after listen(). */
  get addr(): string {
    return this.boundAddr;
  }

  /** Bind; rejects with a one-line reason (address in use, not local...). */
  listen(host: string, port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`cannot serve metrics on ${hostPort(host, port)}: ${err.message}`));
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const a = this.server.address();
        this.boundAddr = hostPort(host, typeof a === 'object' && a ? a.port : port);
        this.log.info({ event: 'metrics.listening', addr: this.boundAddr }, `metrics on http://${this.boundAddr}/metrics`);
        resolve(this.boundAddr);
      });
    });
  }

  /** Stop serving. Idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closing;
  }
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
