import type { Etcd3 } from 'etcd3';
import type { Logger } from '../core/logger';
import { errorText } from '../core/etcd-errors';

/**
 * A lease id as etcdctl prints it (`lease grant`, `lease list`): 16 hex
 * digits, zero-padded, so ids shown by `mesh ls` match etcdctl's byte for
 * byte. (Go's election and lock keys use unpadded `%x`: see
 * monitor-elections.ts, which must not use this.)
 */
export function leaseIdHex(leaseDecimal: string): string {
  return BigInt(leaseDecimal).toString(16).padStart(16, '0');
}

/**
 * Seconds left on each lease (ids in lower-case hex, as etcdctl prints
 * them): -1 when etcd says the lease is gone (expired or revoked), null
 * when the lookup failed (logged). One TimeToLive call per distinct lease.
 */
export async function leaseTtls(client: Etcd3, leasesHex: Iterable<string>, log: Logger): Promise<Map<string, number | null>> {
  const ids = [...new Set(leasesHex)];
  const out = new Map<string, number | null>();
  await Promise.all(
    ids.map(async (hex) => {
      try {
        const res = await client.leaseClient.leaseTimeToLive({ ID: BigInt(`0x${hex}`).toString() });
        out.set(hex, Number(res.TTL));
      } catch (err) {
        log.warn({ event: 'monitor.lease_ttl_failed', lease: hex, err: errorText(err) }, `TimeToLive of lease ${hex} failed`);
        out.set(hex, null);
      }
    }),
  );
  return out;
}
