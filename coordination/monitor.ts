import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent } from 'etcd3';
import { Backoff } from '../core/backoff';
import { componentLogger, type Logger } from '../core/logger';
import { groupCandidates, mayBeCampaignKey, scanKeys } from './monitor-elections';
import { leaseIdHex, leaseTtls } from './monitor-leases';
import { jsonSafe, shown } from './monitor-text';
import { errorText } from '../core/etcd-errors';
import { prefixRange, type KeyRange } from '../core/resumable-watch';
import { ListWatch } from '../core/list-watch';

/**
 * Cluster monitoring (the seed's "集群监控与Leader竞选"): what is alive, read
 * from etcd alone. Services and their endpoints come from the registry
 * (`<prefix>/<service>/<host:port>`, Go endpoints JSON); election leaders and
 * lock holders from Go's concurrency layout (see monitor-elections.ts). Each
 * entry carries the seconds left on its lease: a server that stopped
 * keeping its lease alive shows a TTL running down before its key vanishes.
 */

export interface MonitorOptions {
  /** Registry prefix (default `services`). */
  prefix: string;
  /** Only this service (default: every service under the prefix). */
  service?: string;
  /** Where to look for elections and locks (default: the whole keyspace). */
  electionPrefix?: string;
  /**
   * Reads one registry record: the endpoint, or why the value is not one.
   * Given by the caller (the mesh passes balancer/'s endpoint codec), so
   * coordination stands on core/ alone and the monitor reads whatever
   * registry format the caller's balancer writes.
   */
  decodeRecord: (key: string, value: Buffer) => { addr: string; metadata: unknown } | { reason: string };
}

export interface EndpointView {
  key: string;
  addr: string;
  metadata: unknown;
  /** Lease ID in hex as etcdctl prints it; null when the key has no lease. */
  lease: string | null;
  /** Seconds left on the lease; -1 expired; null without a lease or when unknown. */
  ttl: number | null;
}

export interface ServiceView {
  name: string;
  endpoints: EndpointView[];
}

/** The current holder of an election or lock: the candidate with the lowest create revision. */
export interface HolderView {
  key: string;
  /** The campaign's value (an election's proposal; empty for a lock). */
  value: string;
  lease: string;
  ttl: number | null;
  createRevision: string;
}

export interface ElectionView {
  name: string;
  leader: HolderView;
  /** Keys campaigning, leader included. */
  candidates: number;
}

export interface LockView {
  name: string;
  holder: HolderView;
  /** Keys queued behind the holder. */
  waiters: number;
}

export interface ClusterView {
  /** The etcd revision the view was read at. */
  revision: string;
  prefix: string;
  services: ServiceView[];
  elections: ElectionView[];
  locks: LockView[];
  /** Registry records that are not endpoints (logged and left out of `services`). */
  invalid: { key: string; reason: string }[];
}

/** The registry key prefix the options select, with trailing `/`. */
export function registryPrefix(opts: MonitorOptions): string {
  const p = opts.prefix.replace(/^\/+|\/+$/g, '');
  return opts.service ? `${p}/${opts.service}/` : `${p}/`;
}

function electionRange(opts: MonitorOptions): KeyRange {
  return prefixRange(opts.electionPrefix ?? '');
}

/** One consistent read (one revision) of services, elections and locks, plus lease TTLs. */
export async function scanCluster(client: Etcd3, opts: MonitorOptions, log: Logger = componentLogger('monitor')): Promise<ClusterView> {
  const regPrefix = registryPrefix(opts);
  const root = `${opts.prefix.replace(/^\/+|\/+$/g, '')}/`;
  const reg = prefixRange(regPrefix);
  const regRes = await client.kv.range({ key: reg.start, range_end: reg.end });
  const revision = regRes.header.revision;

  const services = new Map<string, EndpointView[]>();
  const invalid: ClusterView['invalid'] = [];
  for (const kv of regRes.kvs) {
    const key = kv.key.toString('utf8');
    const rec = opts.decodeRecord(key, kv.value);
    if (!('addr' in rec)) {
      log.warn({ event: 'monitor.bad_record', key, reason: rec.reason }, `skipping bad registry record ${key}: ${rec.reason}`);
      invalid.push({ key, reason: rec.reason });
      continue;
    }
    const service = key.slice(root.length).split('/')[0];
    const list = services.get(service) ?? [];
    list.push({ key, addr: rec.addr, metadata: rec.metadata, lease: kv.lease === '0' ? null : leaseIdHex(kv.lease), ttl: null });
    services.set(service, list);
  }

  const scan = await scanKeys(client, electionRange(opts), revision);
  const groups = groupCandidates(scan.kvs, root);
  const holders = await Promise.all(
    [...groups.entries()].map(async ([name, cands]) => {
      const head = cands[0];
      const res = await client.kv.range({ key: Buffer.from(head.key), revision });
      const value = res.kvs[0]?.value.toString('utf8') ?? '';
      return { name, holder: { key: head.key, value, lease: head.lease, ttl: null as number | null, createRevision: head.createRevision }, count: cands.length };
    }),
  );

  const leases = [...[...services.values()].flat().flatMap((e) => (e.lease ? [e.lease] : [])), ...holders.map((h) => h.holder.lease)];
  const ttls = await leaseTtls(client, leases, log);
  for (const e of [...services.values()].flat()) e.ttl = e.lease ? (ttls.get(e.lease) ?? null) : null;
  for (const h of holders) h.holder.ttl = ttls.get(h.holder.lease) ?? null;

  const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  return {
    revision,
    prefix: opts.prefix,
    services: [...services.entries()].map(([name, endpoints]) => ({ name, endpoints: endpoints.sort((a, b) => (a.key < b.key ? -1 : 1)) })).sort(byName),
    elections: holders.filter((h) => h.holder.value !== '').map((h) => ({ name: h.name, leader: h.holder, candidates: h.count })).sort(byName),
    locks: holders.filter((h) => h.holder.value === '').map((h) => ({ name: h.name, holder: h.holder, waiters: h.count - 1 })).sort(byName),
    invalid,
  };
}

/**
 * The live view behind `mesh top`: emits `update(ClusterView)` first once,
 * then after every change to the registry or to election/lock keys (bursts
 * coalesced into one re-read), and after each `refresh()` (TTL countdown).
 *
 * Triggers: a ListWatch on the registry prefix, and one over the election
 * range that re-reads when a key shaped like `<name>/<hex>` changes (both
 * re-list on a watch that cannot resume). Each update is a
 * fresh `scanCluster`, so a view is always one consistent revision. A failed
 * re-read is logged and retried with backoff; the last view stands meanwhile.
 * No event after close().
 */
export class ClusterMonitor extends EventEmitter<{ update: [view: ClusterView] }> {
  private readonly log: Logger;
  private readonly backoff = new Backoff(200, 2_000);
  private registry: ListWatch | undefined;
  private elections: ListWatch | undefined;
  private pending = false;
  private running = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private last: ClusterView | undefined;

  constructor(
    private readonly client: Etcd3,
    readonly opts: MonitorOptions,
    log?: Logger,
  ) {
    super();
    this.log = log ?? componentLogger('monitor', { prefix: opts.prefix });
  }

  /** The latest view, if one was read. */
  get view(): ClusterView | undefined {
    return this.last;
  }

  async start(): Promise<ClusterView> {
    const first = await scanCluster(this.client, this.opts, this.log);
    if (this.closed) return first;
    this.last = first;
    // Every listing (the first may be newer than the first scan; later ones
    // follow a compaction) and every change under the registry: one re-read.
    this.registry = new ListWatch(this.client, prefixRange(registryPrefix(this.opts)), this.log, { backoffMs: [200, 2_000], what: 'monitor' });
    this.registry.on('list', () => this.refresh());
    this.registry.on('events', () => this.refresh());
    this.registry.start();
    this.watchElections();
    setImmediate(() => {
      if (!this.closed) this.emit('update', first);
    });
    return first;
  }

  /** Re-read now (coalesced with any read already queued). */
  refresh(): void {
    if (this.closed) return;
    this.pending = true;
    if (!this.running) void this.rebuild();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.registry?.close();
    this.elections?.close();
    this.removeAllListeners();
  }

  private watchElections(): void {
    const root = `${this.opts.prefix.replace(/^\/+|\/+$/g, '')}/`;
    const lw = new ListWatch(this.client, electionRange(this.opts), this.log, { backoffMs: [200, 2_000], what: 'monitor' });
    this.elections = lw;
    // Only the current state matters here: every listing (the first one,
    // whose revision may be newer than the first scan, and a re-list after a
    // compaction) is answered by one re-read.
    lw.on('list', () => this.refresh());
    lw.on('events', (events: IEvent[]) => {
      if (events.some((ev) => { const k = ev.kv.key.toString('utf8'); return !k.startsWith(root) && mayBeCampaignKey(k); })) this.refresh();
    });
    lw.start();
  }

  private async rebuild(): Promise<void> {
    this.running = true;
    while (this.pending && !this.closed) {
      this.pending = false;
      try {
        const view = await scanCluster(this.client, this.opts, this.log);
        if (this.closed) break;
        this.backoff.reset();
        this.last = view;
        this.emit('update', view);
      } catch (err) {
        if (this.closed) break;
        const delay = this.backoff.next();
        this.log.warn({ event: 'monitor.read_failed', err: errorText(err), retryInMs: delay }, 'reading the cluster view failed; keeping the last one');
        if (this.retryTimer) clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.refresh(), delay);
      }
    }
    this.running = false;
  }
}

/** What changed between two views, one line each (lease TTLs are not changes). Empty `before`: everything is new. */
export function diffViews(before: ClusterView | undefined, after: ClusterView): string[] {
  const lines: string[] = [];
  const eps = (v: ClusterView | undefined) => new Map((v?.services ?? []).flatMap((s) => s.endpoints.map((e) => [`${shown(s.name)} ${shown(e.addr)}`, e] as const)));
  const [oldE, newE] = [eps(before), eps(after)];
  for (const [id, e] of newE) {
    const o = oldE.get(id);
    const meta = jsonSafe(JSON.stringify(e.metadata));
    if (!o) lines.push(`+ endpoint ${id} lease=${e.lease ?? '-'} metadata=${meta}`);
    else if (jsonSafe(JSON.stringify(o.metadata)) !== meta || o.lease !== e.lease) lines.push(`~ endpoint ${id} lease=${e.lease ?? '-'} metadata=${meta}`);
  }
  for (const id of oldE.keys()) if (!newE.has(id)) lines.push(`- endpoint ${id}`);

  const held = (kind: 'election' | 'lock', list: { name: string; h: HolderView; n: number }[], old: { name: string; h: HolderView; n: number }[]) => {
    const prev = new Map(old.map((x) => [x.name, x]));
    const desc = (x: { h: HolderView; n: number }) =>
      kind === 'election' ? `leader=${jsonSafe(JSON.stringify(x.h.value))} key=${shown(x.h.key)} candidates=${x.n}` : `holder=${shown(x.h.key)} waiters=${x.n}`;
    for (const x of list) {
      const o = prev.get(x.name);
      if (!o) lines.push(`+ ${kind} ${shown(x.name)} ${desc(x)}`);
      else if (o.h.key !== x.h.key || o.h.value !== x.h.value || o.n !== x.n) lines.push(`~ ${kind} ${shown(x.name)} ${desc(x)}`);
    }
    const now = new Set(list.map((x) => x.name));
    for (const o of old) if (!now.has(o.name)) lines.push(`- ${kind} ${shown(o.name)}`);
  };
  const el = (v: ClusterView | undefined) => (v?.elections ?? []).map((e) => ({ name: e.name, h: e.leader, n: e.candidates }));
  const lk = (v: ClusterView | undefined) => (v?.locks ?? []).map((l) => ({ name: l.name, h: l.holder, n: l.waiters }));
  held('election', el(after), el(before));
  held('lock', lk(after), lk(before));
  return lines;
}
