import { EventEmitter } from 'node:events';
import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { EtcdPermissionDeniedError } from 'etcd3/lib/errors';
import { ListWatch, isDelete, type ListWatchState } from '../core/list-watch';
import { prefixRange } from '../core/resumable-watch';
import { errorText } from '../core/etcd-errors';
import { componentLogger, type Logger } from '../core/logger';
import { StateCell } from '../core/state-cell';
import { DecodeError, decodeEndpoint } from '../balancer/endpoint-codec';
import { campaignName, isCampaignKey } from '../coordination/monitor-elections';
import { leaseIdHex } from '../coordination/monitor-leases';
import { DashboardLeases, type LeaseTtl } from './dashboard-leases';
import { DashboardTimeline, type TimelineEvent } from './dashboard-timeline';

export interface TopologyOptions {
  /** Registry prefix (`services`). */
  prefix: string;
  /** Only this service (default: every service under the prefix). */
  service?: string;
  /**
   * Where elections, locks and queues are looked for (default: the whole
   * keyspace, as `mesh ls`). A role that may not read it costs only that
   * part of the page (`watches.coordination` = DENIED).
   */
  coordinationPrefix?: string;
}

export interface EndpointEntry {
  key: string;
  service: string;
  addr: string;
  weight: number;
  zone?: string;
  version?: string;
  /** host:port of the process's /metrics, from its Metadata. */
  metrics?: string;
  metadata: unknown;
  /** Lease ID, 16 hex digits as etcdctl prints it; null without a lease. */
  lease: string | null;
  createRevision: string;
}

export interface HolderEntry {
  name: string;
  /** The holder's key (`<name>/<lease hex>`). */
  key: string;
  /** An election's proposal (the leader's value); empty for a lock. */
  value: string;
  lease: string;
  /** Keys behind the holder (candidates or waiters). */
  behind: number;
}

export interface QueueEntry {
  name: string;
  /** Items not yet acknowledged (claimed or not). */
  depth: number;
  /** Items a consumer holds right now. */
  claimed: number;
}

export type CoordinationWatchState = ListWatchState | 'DENIED';

/** What `/api/topology` returns and the page shows (traffic is added by the server). */
export interface TopologySnapshot {
  /** Date.now() of the snapshot, so the page counts TTLs down on its own clock. */
  now: number;
  revision: string;
  prefix: string;
  service: string | null;
  services: { name: string; endpoints: EndpointEntry[] }[];
  elections: HolderEntry[];
  locks: HolderEntry[];
  queues: QueueEntry[];
  invalid: { key: string; reason: string }[];
  leases: Record<string, LeaseTtl>;
  watches: { registry: ListWatchState; coordination: CoordinationWatchState };
}

interface Campaign {
  name: string;
  key: string;
  value: string;
  lease: string;
  createRevision: bigint;
}

const QUEUE_KEY = /^(.+)\/(items|claims)\/([^/]+)$/;

/**
 * The mesh as etcd holds it, kept current from two ListWatches (read-only:
 * Range, Watch and LeaseTimeToLive, nothing else), so it works with a role
 * that may only read:
 *
 * - the registry (`<prefix>/` or `<prefix>/<service>/`): endpoints decoded
 *   with the balancer's codec; a bad record is logged with its key and shown
 *   under `invalid`, never fatal;
 * - the coordination range: elections and locks in Go's `concurrency`
 *   layout (`<name>/<lease hex>`, holder = lowest create revision; empty
 *   value = lock), queues in mesh's layout (`<name>/items/<id>`,
 *   `<name>/claims/<id>`).
 *
 * Emits `change` once per burst of changes (coalesced to one per turn of
 * the event loop), `leases` with refreshed TTLs, and `timeline` for joins,
 * leaves, lost leases, leader and lock-holder changes. No event after close().
 */
export class DashboardTopology extends EventEmitter<{ change: []; leases: [changed: Record<string, LeaseTtl>]; timeline: [ev: TimelineEvent] }> {
  readonly timeline = new DashboardTimeline();
  private readonly log: Logger;
  private readonly leases: DashboardLeases;
  private readonly endpoints = new Map<string, EndpointEntry>();
  private readonly invalid = new Map<string, string>();
  private readonly campaigns = new Map<string, Campaign>();
  private readonly queues = new Map<string, { items: Set<string>; claims: Set<string> }>();
  private registry: ListWatch | undefined;
  private coordination: ListWatch | undefined;
  /** The coordination watch's state as the page shows it: the ListWatch's, or DENIED (final) when the role may not read the range. */
  private readonly coordinationState: StateCell<CoordinationWatchState>;
  private holders = new Map<string, HolderEntry>();
  private revision = '0';
  private listedOnce = false;
  private coordinationListed = false;
  private changeQueued = false;
  private closed = false;
  private readonly root: string;
  private readonly registryPrefix: string;

  constructor(
    private readonly client: Etcd3,
    readonly opts: TopologyOptions,
    log?: Logger,
  ) {
    super();
    this.log = log ?? componentLogger('dashboard', { prefix: opts.prefix });
    this.root = `${opts.prefix.replace(/^\/+|\/+$/g, '')}/`;
    this.registryPrefix = opts.service ? `${this.root}${opts.service}/` : this.root;
    this.leases = new DashboardLeases(client, this.log);
    this.coordinationState = new StateCell<CoordinationWatchState>('IDLE', this.log, 'dashboard.coordination');
    this.leases.on('change', (changed) => this.emit('leases', Object.fromEntries(changed)));
  }

  start(): this {
    const reg = new ListWatch(this.client, prefixRange(this.registryPrefix), this.log, { backoffMs: [200, 2_000], what: 'dashboard.registry' });
    this.registry = reg;
    reg.on('list', (kvs) => this.onRegistryList(kvs));
    reg.on('events', (events, revision) => this.onRegistryEvents(events, revision));
    reg.on('state', () => this.changed());
    reg.start();

    const co = new ListWatch(this.client, prefixRange(this.opts.coordinationPrefix ?? ''), this.log, { backoffMs: [200, 2_000], what: 'dashboard.coordination' });
    this.coordination = co;
    co.on('list', (kvs, revision) => this.onCoordinationList(kvs, revision));
    co.on('events', (events, revision) => this.onCoordinationEvents(events, revision));
    co.on('state', (next, _prev, reason) => {
      if (this.coordinationState.is('DENIED')) return;
      this.coordinationState.set(next, reason);
      this.changed();
    });
    co.on('error', (err) => {
      if (!(err instanceof EtcdPermissionDeniedError || /permission denied/i.test(errorText(err)))) return;
      // A read-only role scoped to the registry: the page shows services and says why the rest is missing.
      this.log.warn({ event: 'dashboard.coordination_denied', range: this.opts.coordinationPrefix ?? '(whole keyspace)', err: errorText(err) }, 'no read permission for elections, locks and queues; showing services only');
      this.coordinationState.set('DENIED', `no read permission: ${errorText(err)}`);
      co.close();
      this.changed();
    });
    co.start();
    return this;
  }

  snapshot(): TopologySnapshot {
    const services = new Map<string, EndpointEntry[]>();
    for (const e of this.endpoints.values()) {
      const list = services.get(e.service) ?? [];
      list.push(e);
      services.set(e.service, list);
    }
    const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    const holders = [...this.holders.values()].sort(byName);
    return {
      now: Date.now(),
      revision: this.revision,
      prefix: this.opts.prefix,
      service: this.opts.service ?? null,
      services: [...services.entries()].map(([name, eps]) => ({ name, endpoints: eps.sort((a, b) => (a.key < b.key ? -1 : 1)) })).sort(byName),
      elections: holders.filter((h) => h.value !== ''),
      locks: holders.filter((h) => h.value === ''),
      queues: [...this.queues.entries()].map(([name, q]) => ({ name, depth: q.items.size, claimed: [...q.claims].filter((id) => q.items.has(id)).length })).filter((q) => q.depth > 0 || q.claimed > 0).sort(byName),
      invalid: [...this.invalid.entries()].map(([key, reason]) => ({ key, reason })),
      leases: this.leases.snapshot(),
      watches: { registry: this.registry?.state ?? 'IDLE', coordination: this.coordinationState.value },
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.registry?.close();
    this.coordination?.close();
    this.leases.close();
    this.removeAllListeners();
  }

  private changed(): void {
    if (this.closed || this.changeQueued) return;
    this.changeQueued = true;
    setImmediate(() => {
      this.changeQueued = false;
      if (!this.closed) this.emit('change');
    });
  }

  private note(kind: TimelineEvent['kind'], subject: string, text: string): void {
    if (this.closed) return;
    const ev: TimelineEvent = { at: Date.now(), kind, subject, text };
    this.timeline.add(ev);
    this.log.info({ event: 'dashboard.timeline', kind, subject }, text);
    this.emit('timeline', ev);
  }

  private bumpRevision(rev: string): void {
    if (BigInt(rev) > BigInt(this.revision)) this.revision = rev;
  }

  // --- registry ---

  private decode(kv: IKeyValue): EndpointEntry | undefined {
    const key = kv.key.toString('utf8');
    const rec = decodeEndpoint(key, kv.value);
    if (rec instanceof DecodeError) {
      if (this.invalid.get(key) !== rec.reason) this.log.warn({ event: 'dashboard.bad_record', key, reason: rec.reason }, `skipping bad registry record ${key}: ${rec.reason}`);
      this.invalid.set(key, rec.reason);
      return undefined;
    }
    this.invalid.delete(key);
    for (const w of rec.warnings) this.log.warn({ event: 'dashboard.record_warning', key, warning: w }, `${key}: ${w}`);
    const a = rec.attributes;
    return {
      key,
      service: key.slice(this.root.length).split('/')[0],
      addr: rec.addr,
      weight: a.weight,
      zone: a.zone,
      version: a.version,
      metrics: a.metrics,
      metadata: rec.metadata,
      lease: kv.lease && kv.lease !== '0' ? leaseIdHex(kv.lease) : null,
      createRevision: kv.create_revision,
    };
  }

  private onRegistryList(kvs: IKeyValue[]): void {
    const before = new Map(this.endpoints);
    const first = !this.listedOnce;
    this.endpoints.clear();
    this.invalid.clear();
    for (const kv of kvs) {
      const e = this.decode(kv);
      if (e) this.endpoints.set(e.key, e);
    }
    this.listedOnce = true;
    // The first listing is the state we found, not a change; a re-list (after a compaction) is diffed.
    if (!first) {
      for (const [k, e] of this.endpoints) if (!before.has(k)) this.joined(e);
      for (const [k, e] of before) if (!this.endpoints.has(k)) this.left(e);
    }
    this.afterRegistryChange();
  }

  private onRegistryEvents(events: IEvent[], revision: string): void {
    for (const ev of events) {
      const key = ev.kv.key.toString('utf8');
      const prev = this.endpoints.get(key);
      if (isDelete(ev)) {
        this.invalid.delete(key);
        if (prev) {
          this.endpoints.delete(key);
          this.left(prev);
        }
        continue;
      }
      const e = this.decode(ev.kv);
      if (!e) {
        if (prev) {
          this.endpoints.delete(key);
          this.left(prev);
        }
        continue;
      }
      this.endpoints.set(key, e);
      if (!prev) this.joined(e);
      else if (prev.lease !== e.lease) this.note('re-registered', key, `${e.addr} (${e.service}) registered again under lease ${e.lease ?? '-'}`);
    }
    this.bumpRevision(revision);
    this.afterRegistryChange();
  }

  private joined(e: EndpointEntry): void {
    this.note('joined', e.key, `${e.addr} joined ${e.service}${e.zone ? ` (zone ${e.zone})` : ''}, weight ${e.weight}`);
  }

  private left(e: EndpointEntry): void {
    // etcd's delete does not say why. A key deleted once its lease's count-down
    // had run out (etcd reports whole seconds, rounded down, so the true rest
    // was under ttl + 1 s) went with the lease: nobody kept it alive. Any
    // other delete was a revoke (SIGTERM) or by hand.
    const t = e.lease ? this.leases.get(e.lease) : undefined;
    const expired = t !== undefined && (t.ttl < 0 || t.ttl - (Date.now() - t.at) / 1000 <= 0);
    if (expired) this.note('lease-lost', e.key, `${e.addr} left ${e.service}: its lease ${e.lease} expired (process dead or cut off)`);
    else this.note('left', e.key, `${e.addr} left ${e.service}`);
  }

  private afterRegistryChange(): void {
    this.leases.setWanted(this.leaseIds());
    this.changed();
  }

  private leaseIds(): string[] {
    const ids: string[] = [];
    for (const e of this.endpoints.values()) if (e.lease) ids.push(e.lease);
    for (const h of this.holders.values()) ids.push(h.lease);
    return ids;
  }

  // --- elections, locks, queues ---

  private applyCoordination(kv: IKeyValue): void {
    const key = kv.key.toString('utf8');
    if (key.startsWith(this.root)) return;
    if (isCampaignKey(key, kv.lease)) {
      this.campaigns.set(key, { name: campaignName(key), key, value: kv.value.toString('utf8'), lease: leaseIdHex(kv.lease), createRevision: BigInt(kv.create_revision) });
      return;
    }
    const m = QUEUE_KEY.exec(key);
    if (m) {
      const q = this.queues.get(m[1]) ?? { items: new Set<string>(), claims: new Set<string>() };
      (m[2] === 'items' ? q.items : q.claims).add(m[3]);
      this.queues.set(m[1], q);
    }
  }

  private removeCoordination(key: string): void {
    if (this.campaigns.delete(key)) return;
    const m = QUEUE_KEY.exec(key);
    const q = m ? this.queues.get(m[1]) : undefined;
    if (!m || !q) return;
    (m[2] === 'items' ? q.items : q.claims).delete(m[3]);
    if (q.items.size === 0 && q.claims.size === 0) this.queues.delete(m[1]);
  }

  private onCoordinationList(kvs: IKeyValue[], revision: string): void {
    this.campaigns.clear();
    this.queues.clear();
    for (const kv of kvs) this.applyCoordination(kv);
    this.bumpRevision(revision);
    // The first listing is what was there already: shown, not put on the timeline.
    this.afterCoordinationChange(!this.coordinationListed);
    this.coordinationListed = true;
  }

  private onCoordinationEvents(events: IEvent[], revision: string): void {
    let touched = false;
    for (const ev of events) {
      const key = ev.kv.key.toString('utf8');
      if (key.startsWith(this.root)) continue;
      touched = true;
      if (isDelete(ev)) this.removeCoordination(key);
      else this.applyCoordination(ev.kv);
    }
    this.bumpRevision(revision);
    if (touched) this.afterCoordinationChange();
  }

  /** Holders recomputed from the campaign keys; what changed goes to the timeline. */
  private afterCoordinationChange(quiet = false): void {
    const groups = new Map<string, Campaign[]>();
    for (const c of this.campaigns.values()) {
      const g = groups.get(c.name) ?? [];
      g.push(c);
      groups.set(c.name, g);
    }
    const next = new Map<string, HolderEntry>();
    for (const [name, g] of groups) {
      g.sort((a, b) => (a.createRevision < b.createRevision ? -1 : 1));
      const h = g[0];
      next.set(name, { name, key: h.key, value: h.value, lease: h.lease, behind: g.length - 1 });
    }
    for (const [name, h] of next) {
      const o = this.holders.get(name);
      const lock = h.value === '';
      if (quiet || (o && o.key === h.key && o.value === h.value)) continue;
      if (lock) this.note('lock-taken', name, `lock ${name} taken by ${h.key}`);
      // The same proposal under a new key is the same candidate campaigning again (its lease was lost): a new term, not a change of leader.
      else if (o && o.value === h.value) this.note('leader-elected', name, `election ${name}: ${h.value} leads again (new key ${h.key})`);
      else this.note(o ? 'leader-changed' : 'leader-elected', name, o ? `election ${name}: leader ${o.value} -> ${h.value}` : `election ${name}: ${h.value} leads`);
    }
    for (const [name, o] of this.holders) {
      if (quiet || next.has(name)) continue;
      if (o.value === '') this.note('lock-released', name, `lock ${name} released by ${o.key}`);
      else this.note('election-ended', name, `election ${name}: no candidate left (leader was ${o.value})`);
    }
    this.holders = next;
    this.leases.setWanted(this.leaseIds());
    this.changed();
  }
}
