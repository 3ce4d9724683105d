import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy for fault tests: `cut()` drops every live connection,
 * `block()` makes it refuse new ones (accept, then destroy) until
 * `unblock()`. Clients see a real broken link, not a mock.
 */
export class FaultProxy {
  private readonly sockets = new Set<Socket>();
  private blocked = false;
  private server: Server | undefined;
  port = 0;

  constructor(private readonly targetHost: string, private readonly targetPort: number) {}

  static async start(target: string): Promise<FaultProxy> {
    const i = target.lastIndexOf(':');
    const p = new FaultProxy(target.slice(0, i), Number(target.slice(i + 1)));
    await p.listen();
    return p;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  private listen(): Promise<void> {
    this.server = createServer((client) => {
      if (this.blocked) {
        client.destroy();
        return;
      }
      const upstream = connect(this.targetPort, this.targetHost);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    return new Promise((resolve) =>
      this.server!.listen(0, '127.0.0.1', () => {
        this.port = (this.server!.address() as { port: number }).port;
        resolve();
      }),
    );
  }

  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  block(): void {
    this.blocked = true;
    this.cut();
  }

  unblock(): void {
    this.blocked = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
