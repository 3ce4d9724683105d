import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { ListWatch, isDelete, type ListWatchState } from '../core/list-watch';
import { prefixRange } from '../core/resumable-watch';
import type { Logger } from '../core/logger';
import { DecodeError, decodeEndpoint } from '../balancer/endpoint-codec';
import { leaseIdHex } from '../coordination/monitor-leases';
import type { LeaseTtl } from './dashboard-leases';
import type { TimelineEvent } from './dashboard-timeline';

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

/** What the registry view reports to the topology that holds it; called synchronously. */
export interface RegistryViewHost {
  note(kind: TimelineEvent['kind'], subject: string, text: string): void;
  /** The last TTL read of a lease (hex), to tell an expiry from a revoke. */
  leaseOf(hex: string): LeaseTtl | undefined;
  revision(rev: string): void;
  /** The view changed; `leases`: the set of leases it names may have changed too. */
  changed(leases: boolean): void;
}

/**
 * The registry (`<prefix>/` or `<prefix>/<service>/`) as etcd holds it,
 * kept from one ListWatch (Range and Watch: read-only). Endpoints are
 * decoded with the balancer's codec; a bad record is logged with its key
 * and kept under `invalid`, never fatal. Joins, leaves, lost leases and
 * re-registrations go to the host's timeline; the first listing is the
 * state found, not a change. close() is idempotent.
 */
export class DashboardRegistryView {
  private readonly endpoints = new Map<string, EndpointEntry>();
  private readonly invalid = new Map<string, string>();
  private watch: ListWatch | undefined;
  private listedOnce = false;

  constructor(
    private readonly client: Etcd3,
    /** The registry root with a trailing slash (`services/`): a key's service is the segment after it. */
    private readonly root: string,
    /** What is watched: the root, or one service under it. */
    private readonly range: string,
    private readonly log: Logger,
    private readonly host: RegistryViewHost,
  ) {}

  start(): this {
    const w = new ListWatch(this.client, prefixRange(this.range), this.log, { backoffMs: [200, 2_000], what: 'dashboard.registry' });
    this.watch = w;
    w.on('list', (kvs) => this.onList(kvs));
    w.on('events', (events, revision) => this.onEvents(events, revision));
    w.on('state', () => this.host.changed(false));
    w.start();
    return this;
  }

  get state(): ListWatchState {
    return this.watch?.state ?? 'IDLE';
  }

  /** Services by name, each with its endpoints in key order. */
  services(): { name: string; endpoints: EndpointEntry[] }[] {
    const services = new Map<string, EndpointEntry[]>();
    for (const e of this.endpoints.values()) {
      const list = services.get(e.service) ?? [];
      list.push(e);
      services.set(e.service, list);
    }
    return [...services.entries()]
      .map(([name, eps]) => ({ name, endpoints: eps.sort((a, b) => (a.key < b.key ? -1 : 1)) }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  invalidRecords(): { key: string; reason: string }[] {
    return [...this.invalid.entries()].map(([key, reason]) => ({ key, reason }));
  }

  /** Every endpoint now listed, in no particular order (cheaper than services() for a scan). */
  entries(): IterableIterator<EndpointEntry> {
    return this.endpoints.values();
  }

  leaseIds(): string[] {
    const ids: string[] = [];
    for (const e of this.endpoints.values()) if (e.lease) ids.push(e.lease);
    return ids;
  }

  close(): void {
    this.watch?.close();
  }

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

  private onList(kvs: IKeyValue[]): void {
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
    this.host.changed(true);
  }

  private onEvents(events: IEvent[], revision: string): void {
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
      else if (prev.lease !== e.lease) this.host.note('re-registered', key, `${e.addr} (${e.service}) registered again under lease ${e.lease ?? '-'}`);
    }
    this.host.revision(revision);
    this.host.changed(true);
  }

  private joined(e: EndpointEntry): void {
    this.host.note('joined', e.key, `${e.addr} joined ${e.service}${e.zone ? ` (zone ${e.zone})` : ''}, weight ${e.weight}`);
  }

  private left(e: EndpointEntry): void {
    // etcd's delete does not say why. A key deleted once its lease's count-down
    // had run out (etcd reports whole seconds, rounded down, so the true rest
    // was under ttl + 1 s) went with the lease: nobody kept it alive. Any
    // other delete was a revoke (SIGTERM) or by hand.
    const t = e.lease ? this.host.leaseOf(e.lease) : undefined;
    const expired = t !== undefined && (t.ttl < 0 || t.ttl - (Date.now() - t.at) / 1000 <= 0);
    if (expired) this.host.note('lease-lost', e.key, `${e.addr} left ${e.service}: its lease ${e.lease} expired (process dead or cut off)`);
    else this.host.note('left', e.key, `${e.addr} left ${e.service}`);
  }
}
