/**
 * A host (a Host header, a bind address, a /metrics address) naming this
 * machine only: localhost, 127.x.x.x, ::1, with or without a port. Host
 * names compare without case (RFC 9110 4.2.3): `LOCALHOST:8080` is this
 * machine too. Anything else (another name, even one that resolves to
 * 127.0.0.1, an IPv4-mapped ::ffff:127.0.0.1) is not: the answer never
 * depends on DNS.
 */
export function isLoopbackHost(host: string | undefined): boolean {
  if (!host) return false;
  const h = host.toLowerCase();
  const name = h.startsWith('[') ? h.slice(1, h.indexOf(']')) : h.includes(':') && h.indexOf(':') === h.lastIndexOf(':') ? h.slice(0, h.indexOf(':')) : h;
  return name === 'localhost' || name === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}
