import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy to one target, for cutting a client's connections on
 * demand: `cut()` destroys every connection open right now (both sides) and
 * keeps listening, so the client sees its stream drop and can reconnect;
 * `pause()` makes new connections fail at once until `resume()` (an outage
 * the client cannot reconnect through); `close()` stops listening and
 * destroys everything (idempotent).
 */
export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private closed = false;
  private paused = false;
  /** Connections accepted so far (reconnects show up here). */
  accepted = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listen on a free loopback port and forward each connection to `targetHost:targetPort`. */
  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const proxy = new TcpProxy(server, (server.address() as { port: number }).port);
    server.on('connection', (client) => proxy.pipe(client, targetHost, targetPort));
    return proxy;
  }

  /** `127.0.0.1:<port>`, for --etcd. */
  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Connections open right now. */
  get open(): number {
    return Math.ceil(this.sockets.size / 2);
  }

  private pipe(client: Socket, host: string, port: number): void {
    if (this.closed || this.paused) {
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = connect(port, host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        // One side gone: the connection is over.
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Destroy every current connection; new ones are still accepted. Returns how many were cut. */
  cut(): number {
    const n = this.open;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    return n;
  }

  /** Refuse (accept and drop) every new connection until resume(); open ones are left alone (cut() them too for an outage). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
