import { leaseIdHex } from './monitor-leases';
import type { Etcd3, IKeyValue } from 'etcd3';
import type { KeyRange } from '../core/resumable-watch';

/**
 * Finding Go `concurrency.Election` (and `concurrency.Mutex`) state without
 * being told the names: both write `<name>/<lease id in lower-case hex>` with
 * that lease attached, and the holder is the key with the lowest create
 * revision. So a key whose last path segment is the hex of its own lease is
 * a candidate of election (or lock) `<name>`. `etcdctl elect NAME P` and
 * `etcdctl lock NAME` write exactly this.
 *
 * Elections and locks share the layout; they differ in the value: a Mutex
 * writes an empty value, a campaign writes its proposal. A group whose
 * holder has an empty value is reported as a lock.
 */

/** One candidate key as found by the scan (value not read: keys-only scan). */
export interface Candidate {
  name: string;
  key: string;
  /** Lease ID, lower-case hex (as etcdctl prints it). */
  lease: string;
  createRevision: string;
}

/** True when the last `/`-segment of `key` is `lease` in lower-case hex, and the key has that lease. */
export function isCampaignKey(key: string, leaseDecimal: string): boolean {
  if (leaseDecimal === '0' || leaseDecimal === '') return false;
  const slash = key.lastIndexOf('/');
  if (slash <= 0) return false;
  return key.slice(slash + 1) === BigInt(leaseDecimal).toString(16);
}

/** Key name of a campaign key: everything before the last `/`. */
export function campaignName(key: string): string {
  return key.slice(0, key.lastIndexOf('/'));
}

/** A key that might belong to an election or lock (for cheap filtering of watch events, which carry no lease on delete). */
export function mayBeCampaignKey(key: string): boolean {
  return /\/[0-9a-f]{1,16}$/.test(key);
}

/**
 * Candidates grouped by name, each group sorted by create revision (holder
 * first). Keys under `exclude` (the service registry) are skipped.
 */
export function groupCandidates(kvs: IKeyValue[], exclude?: string): Map<string, Candidate[]> {
  const groups = new Map<string, Candidate[]>();
  for (const kv of kvs) {
    const key = kv.key.toString('utf8');
    if (exclude && key.startsWith(exclude)) continue;
    if (!isCampaignKey(key, kv.lease)) continue;
    const c: Candidate = { name: campaignName(key), key, lease: leaseIdHex(kv.lease), createRevision: kv.create_revision };
    const list = groups.get(c.name) ?? [];
    list.push(c);
    groups.set(c.name, list);
  }
  for (const list of groups.values()) list.sort((a, b) => (BigInt(a.createRevision) < BigInt(b.createRevision) ? -1 : 1));
  return groups;
}

/** Page size of the keys-only scan: bounds each response on a big keyspace. */
const PAGE = 1000;

/**
 * Keys-only scan of `range` at one revision, page by page (so a big keyspace
 * never costs one huge response). keys_only still returns lease and create
 * revision, which is all the discovery needs.
 */
export async function scanKeys(client: Etcd3, range: KeyRange, atRevision?: string): Promise<{ kvs: IKeyValue[]; revision: string }> {
  const kvs: IKeyValue[] = [];
  let start = range.start;
  let revision: string | undefined = atRevision;
  for (;;) {
    const res = await client.kv.range({ key: start, range_end: range.end, keys_only: true, limit: PAGE, revision });
    revision ??= res.header.revision;
    kvs.push(...res.kvs);
    if (!res.more || res.kvs.length === 0) break;
    // Next page: just after the last key returned.
    start = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
  }
  return { kvs, revision: revision ?? '0' };
}
