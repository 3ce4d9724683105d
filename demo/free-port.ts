import { createServer } from 'node:net';

/**
 * Ports this process handed out lately. The OS may give a port it just
 * released to the very next bind(0), so two calls in a row can return the
 * same port (a cluster's peer URLs once came out identical, and etcd refused
 * the "duplicate url"); a port already handed out is not handed out again.
 */
const handedOut = new Set<number>();
const REMEMBERED = 4_096;

function osFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A loopback TCP port that was free a moment ago (the OS picked it), and not one this process handed out lately. */
export async function freePort(): Promise<number> {
  for (let tries = 0; ; tries++) {
    const port = await osFreePort();
    if (!handedOut.has(port) || tries >= 20) {
      handedOut.add(port);
      // Forget the oldest (a Set iterates in insertion order).
      if (handedOut.size > REMEMBERED) handedOut.delete(handedOut.values().next().value as number);
      return port;
    }
  }
}
