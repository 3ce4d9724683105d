import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { EtcdPermissionDeniedError } from 'etcd3/lib/errors';
import { ListWatch, isDelete, type ListWatchState } from '../core/list-watch';
import { prefixRange } from '../core/resumable-watch';
import { errorText } from '../core/etcd-errors';
import type { Logger } from '../core/logger';
import { StateCell } from '../core/state-cell';
import { campaignName, isCampaignKey } from '../coordination/monitor-elections';
import { leaseIdHex } from '../coordination/monitor-leases';
import type { TimelineEvent } from './dashboard-timeline';

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

/** What the coordination view reports to the topology that holds it; called synchronously. */
export interface CoordinationViewHost {
  note(kind: TimelineEvent['kind'], subject: string, text: string): void;
  revision(rev: string): void;
  /** The view changed; `leases`: the set of leases it names may have changed too. */
  changed(leases: boolean): void;
}

interface Campaign {
  name: string;
  key: string;
  value: string;
  lease: string;
  createRevision: bigint;
}

const QUEUE_KEY = /^(.+)\/(items|claims)\/([^/]+)$/;
const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * Elections, locks and queues as etcd holds them, kept from one ListWatch
 * over the coordination range (read-only), registry keys left out:
 * elections and locks in Go's `concurrency` layout (`<name>/<lease hex>`,
 * holder = lowest create revision; empty value = lock), queues in mesh's
 * layout (`<name>/items/<id>`, `<name>/claims/<id>`). Leader and
 * lock-holder changes go to the host's timeline (not those of the first
 * listing: that is what was there already). A role that may not read the
 * range costs only this view: its state becomes DENIED (final) and the
 * watch is closed. close() is idempotent.
 */
export class DashboardCoordinationView {
  private readonly campaigns = new Map<string, Campaign>();
  private readonly queues = new Map<string, { items: Set<string>; claims: Set<string> }>();
  private holders = new Map<string, HolderEntry>();
  private watch: ListWatch | undefined;
  /** The state as the page shows it: the ListWatch's, or DENIED (final) when the role may not read the range. */
  private readonly cell: StateCell<CoordinationWatchState>;
  private listed = false;

  constructor(
    private readonly client: Etcd3,
    /** Where to look (`''`: the whole keyspace). */
    private readonly prefix: string | undefined,
    /** The registry root (`services/`): its keys are the registry view's, skipped here. */
    private readonly root: string,
    private readonly log: Logger,
    private readonly host: CoordinationViewHost,
  ) {
    this.cell = new StateCell<CoordinationWatchState>('IDLE', this.log, 'dashboard.coordination');
  }

  start(): this {
    const w = new ListWatch(this.client, prefixRange(this.prefix ?? ''), this.log, { backoffMs: [200, 2_000], what: 'dashboard.coordination' });
    this.watch = w;
    w.on('list', (kvs, revision) => this.onList(kvs, revision));
    w.on('events', (events, revision) => this.onEvents(events, revision));
    w.on('state', (next, _prev, reason) => {
      if (this.cell.is('DENIED')) return;
      this.cell.set(next, reason);
      this.host.changed(false);
    });
    w.on('error', (err) => {
      if (!(err instanceof EtcdPermissionDeniedError || /permission denied/i.test(errorText(err)))) return;
      // A read-only role scoped to the registry: the page shows services and says why the rest is missing.
      this.log.warn({ event: 'dashboard.coordination_denied', range: this.prefix ?? '(whole keyspace)', err: errorText(err) }, 'no read permission for elections, locks and queues; showing services only');
      this.cell.set('DENIED', `no read permission: ${errorText(err)}`);
      w.close();
      this.host.changed(false);
    });
    w.start();
    return this;
  }

  get state(): CoordinationWatchState {
    return this.cell.value;
  }

  elections(): HolderEntry[] {
    return [...this.holders.values()].filter((h) => h.value !== '').sort(byName);
  }

  locks(): HolderEntry[] {
    return [...this.holders.values()].filter((h) => h.value === '').sort(byName);
  }

  /** Queues with anything in them. */
  queueList(): QueueEntry[] {
    return [...this.queues.entries()]
      .map(([name, q]) => ({ name, depth: q.items.size, claimed: [...q.claims].filter((id) => q.items.has(id)).length }))
      .filter((q) => q.depth > 0 || q.claimed > 0)
      .sort(byName);
  }

  leaseIds(): string[] {
    return [...this.holders.values()].map((h) => h.lease);
  }

  close(): void {
    this.watch?.close();
  }

  private apply(kv: IKeyValue): void {
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

  private remove(key: string): void {
    if (this.campaigns.delete(key)) return;
    const m = QUEUE_KEY.exec(key);
    const q = m ? this.queues.get(m[1]) : undefined;
    if (!m || !q) return;
    (m[2] === 'items' ? q.items : q.claims).delete(m[3]);
    if (q.items.size === 0 && q.claims.size === 0) this.queues.delete(m[1]);
  }

  private onList(kvs: IKeyValue[], revision: string): void {
    this.campaigns.clear();
    this.queues.clear();
    for (const kv of kvs) this.apply(kv);
    this.host.revision(revision);
    // The first listing is what was there already: shown, not put on the timeline.
    this.afterChange(!this.listed);
    this.listed = true;
  }

  private onEvents(events: IEvent[], revision: string): void {
    let touched = false;
    for (const ev of events) {
      const key = ev.kv.key.toString('utf8');
      if (key.startsWith(this.root)) continue;
      touched = true;
      if (isDelete(ev)) this.remove(key);
      else this.apply(ev.kv);
    }
    this.host.revision(revision);
    if (touched) this.afterChange();
  }

  /** Holders recomputed from the campaign keys; what changed goes to the timeline. */
  private afterChange(quiet = false): void {
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
    const note = this.host.note.bind(this.host);
    for (const [name, h] of next) {
      const o = this.holders.get(name);
      const lock = h.value === '';
      if (quiet || (o && o.key === h.key && o.value === h.value)) continue;
      if (lock) note('lock-taken', name, `lock ${name} taken by ${h.key}`);
      // The same proposal under a new key is the same candidate campaigning again (its lease was lost): a new term, not a change of leader.
      else if (o && o.value === h.value) note('leader-elected', name, `election ${name}: ${h.value} leads again (new key ${h.key})`);
      else note(o ? 'leader-changed' : 'leader-elected', name, o ? `election ${name}: leader ${o.value} -> ${h.value}` : `election ${name}: ${h.value} leads`);
    }
    for (const [name, o] of this.holders) {
      if (quiet || next.has(name)) continue;
      if (o.value === '') note('lock-released', name, `lock ${name} released by ${o.key}`);
      else note('election-ended', name, `election ${name}: no candidate left (leader was ${o.value})`);
    }
    this.holders = next;
    this.host.changed(true);
  }
}
