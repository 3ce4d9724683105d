import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { ListWatchState } from '../core/list-watch';
import { componentLogger, type Logger } from '../core/logger';
import { DashboardLeases, type LeaseTtl } from './dashboard-leases';
import { DashboardTimeline, type TimelineEvent } from './dashboard-timeline';
import { DashboardRegistryView, type EndpointEntry } from './dashboard-registry-view';
import { DashboardRegistryHealth, type RegistryHealth, type RegistryHealthOptions } from './dashboard-registry-health';
import { DashboardCoordinationView, type CoordinationWatchState, type HolderEntry, type QueueEntry } from './dashboard-coordination-view';

export type { EndpointEntry } from './dashboard-registry-view';
export type { CoordinationWatchState, HolderEntry, QueueEntry } from './dashboard-coordination-view';
export type { RegistryHealth } from './dashboard-registry-health';

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
  /** How often, and how patiently, etcd is asked whether it still answers (see DashboardRegistryHealth). */
  health?: RegistryHealthOptions;
}

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
  /** Whether etcd answers, so whether the rest is current (a silent watch looks the same either way). */
  registry: RegistryHealth;
}

/**
 * The mesh as etcd holds it: the registry view and the coordination view
 * (each kept from its own ListWatch), the TTLs of the leases they name, the
 * timeline of what changed, and whether etcd still answers (registry
 * health: live, or stale since when). Read-only (Range, Watch and
 * LeaseTimeToLive, nothing else), so it works with a role that may only
 * read.
 *
 * Emits `change` once per burst of changes (coalesced to one per turn of
 * the event loop), `leases` with refreshed TTLs, and `timeline` for joins,
 * leaves, lost leases, leader and lock-holder changes. No event after close().
 */
export class DashboardTopology extends EventEmitter<{ change: []; leases: [changed: Record<string, LeaseTtl>]; timeline: [ev: TimelineEvent] }> {
  readonly timeline = new DashboardTimeline();
  readonly registry: DashboardRegistryView;
  readonly coordination: DashboardCoordinationView;
  readonly health: DashboardRegistryHealth;
  private readonly log: Logger;
  private readonly leases: DashboardLeases;
  private revision = '0';
  private changeQueued = false;
  private closed = false;

  constructor(
    client: Etcd3,
    readonly opts: TopologyOptions,
    log?: Logger,
  ) {
    super();
    this.log = log ?? componentLogger('dashboard', { prefix: opts.prefix });
    const root = `${opts.prefix.replace(/^\/+|\/+$/g, '')}/`;
    const host = {
      note: (kind: TimelineEvent['kind'], subject: string, text: string) => this.note(kind, subject, text),
      leaseOf: (hex: string) => this.leases.get(hex),
      revision: (rev: string) => this.bumpRevision(rev),
      changed: (leases: boolean) => {
        if (leases && !this.closed) this.leases.setWanted([...this.registry.leaseIds(), ...this.coordination.leaseIds()]);
        this.changed();
      },
    };
    this.leases = new DashboardLeases(client, this.log);
    const range = opts.service ? `${root}${opts.service}/` : root;
    this.registry = new DashboardRegistryView(client, root, range, this.log, host);
    this.health = new DashboardRegistryHealth(client, range, this.log, opts.health);
    this.health.on('change', () => this.changed());
    this.coordination = new DashboardCoordinationView(client, opts.coordinationPrefix, root, this.log, host);
    this.leases.on('change', (changed) => this.emit('leases', Object.fromEntries(changed)));
  }

  start(): this {
    this.registry.start();
    this.coordination.start();
    this.health.start();
    return this;
  }

  snapshot(): TopologySnapshot {
    return {
      now: Date.now(),
      revision: this.revision,
      prefix: this.opts.prefix,
      service: this.opts.service ?? null,
      services: this.registry.services(),
      elections: this.coordination.elections(),
      locks: this.coordination.locks(),
      queues: this.coordination.queueList(),
      invalid: this.registry.invalidRecords(),
      leases: this.leases.snapshot(),
      watches: { registry: this.registry.state, coordination: this.coordination.state },
      registry: this.health.current,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.registry.close();
    this.coordination.close();
    this.health.close();
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
}
