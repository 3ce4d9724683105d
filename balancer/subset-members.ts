import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Etcd3, IEvent, IKeyValue } from 'etcd3';
import { EtcdAuthenticationFailedError, EtcdPermissionDeniedError, EtcdUserNotFoundError } from 'etcd3/lib/errors';
import { ListWatch, isDelete } from '../core/list-watch';
import { prefixRange } from '../core/resumable-watch';
import { componentLogger, type Logger } from '../core/logger';
import { LeaseRegistration } from './registration-lease';

/**
 * The key space of subsetting clients, apart from the registry: one key per
 * client that subsets `<prefix>/<service>`, at
 * `__mesh/clients/<prefix>/<service>/<member id>`, under a lease of its own.
 * Outside every registry prefix on purpose: Go's naming resolver, `etcdctl
 * get --prefix services` and `mesh ls` never see it; the member id (host,
 * pid, random) never equals a lease id in hex, so the monitor's election
 * discovery does not take it for a campaign.
 */
export const MEMBERS_ROOT = '__mesh/clients';
/** The lease TTL of a membership key: a client that dies without revoking still counts for at most this long. */
export const MEMBER_TTL_SECONDS = 10;

/** `services/greeter/` (a registry prefix) -> `__mesh/clients/services/greeter/`. */
export function membersPrefix(registryPrefix: string): string {
  return `${MEMBERS_ROOT}/${registryPrefix.replace(/^\/+|\/+$/g, '')}/`;
}

/** A member id: host, pid and 6 random hex digits (`web-1.4711.a3f09c`), unique and readable in etcdctl's output. */
export function newMemberId(host = hostname(), pid = process.pid): string {
  return `${host.replace(/[^A-Za-z0-9_-]/g, '_') || 'host'}.${pid}.${randomBytes(3).toString('hex')}`;
}

/** A client's place among the live members: 0-based rank by create revision, and how many there are. */
export interface MemberRank {
  rank: number;
  members: number;
}

/** Events of SubsetMembers; listeners run synchronously. */
export interface SubsetMembersEvents {
  /** The rank or the member count changed (coalesced: at most once per minIntervalMs). */
  rank: [rank: MemberRank];
  /** etcd refused to let this client write or read the member keys (permission, credentials): final. */
  refused: [err: Error];
}

/** Errors that no retry can mend: the role, the user or its password. */
export function isRefusal(err: unknown): boolean {
  return err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError || err instanceof EtcdUserNotFoundError;
}

/** Every member set's close() still under way, so a process can let the revokes land before it closes etcd (subsetMembersClosed). */
const closing = new Set<Promise<void>>();

/**
 * Resolves once every SubsetMembers closed so far has revoked its lease (or
 * `timeoutMs` passed): the CLI awaits it between closing its channel and
 * closing etcd, so the member key goes at once rather than a TTL later.
 */
export async function subsetMembersClosed(timeoutMs = 2_000): Promise<void> {
  if (closing.size === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.allSettled([...closing]), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs).unref()))]);
  clearTimeout(timer);
}

/**
 * This client's membership among the clients that subset one service, so
 * each can use its rank as a dense client id (subset-aperture.ts):
 * - writes `membersPrefix(registry) + memberId` under a lease, with the
 *   repo's registration machinery (LeaseRegistration: kept alive, written
 *   again after a lost lease or a deletion by hand, revoked on close);
 * - lists and watches the member prefix (ListWatch); the rank is the
 *   position of our key among the live keys by create revision, so a join
 *   appends and a leave shifts only the later ranks;
 * - while our own key is missing after we were a member (lease lost, etcd
 *   away), we count as the newest member: the place we get back when the
 *   key is written again.
 * - etcd refusing the write or the read (permission, credentials) ends it:
 *   `refused`, the lease revoked. Nothing else is fatal: etcd unreachable
 *   only delays.
 * No event after close(); close() is idempotent.
 */
export class SubsetMembers extends EventEmitter<SubsetMembersEvents> {
  readonly key: string;
  readonly prefix: string;
  private readonly registration: LeaseRegistration;
  private readonly lw: ListWatch;
  /** Live member keys -> create revision. */
  private readonly live = new Map<string, bigint>();
  private wasMember = false;
  private last: MemberRank | undefined;
  private emitted: MemberRank | undefined;
  private lastEmitAt = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;
  private closed: Promise<void> | undefined;
  private readonly minIntervalMs: number;

  constructor(
    client: Etcd3,
    registryPrefix: string,
    private readonly log: Logger,
    opts: { memberId?: string; ttlSeconds?: number; minIntervalMs?: number; metadata?: unknown } = {},
  ) {
    super();
    this.prefix = membersPrefix(registryPrefix);
    const id = opts.memberId ?? newMemberId();
    this.minIntervalMs = opts.minIntervalMs ?? 500;
    this.registration = new LeaseRegistration(client, {
      prefix: MEMBERS_ROOT,
      service: registryPrefix.replace(/^\/+|\/+$/g, ''),
      addr: id,
      ttlSeconds: opts.ttlSeconds ?? MEMBER_TTL_SECONDS,
      metadata: opts.metadata ?? { host: hostname(), pid: process.pid },
    }, componentLogger('subset-members', { key: `${this.prefix}${id}` }));
    this.key = this.registration.key;
    this.lw = new ListWatch(client, prefixRange(this.prefix), log, { what: 'subset-members' });
    this.lw.on('list', (kvs: IKeyValue[]) => {
      this.live.clear();
      for (const kv of kvs) this.live.set(kv.key.toString('utf8'), BigInt(kv.create_revision));
      this.recompute();
    });
    this.lw.on('events', (events: IEvent[]) => {
      for (const ev of events) {
        const key = ev.kv.key.toString('utf8');
        if (isDelete(ev)) this.live.delete(key);
        else this.live.set(key, BigInt(ev.kv.create_revision));
      }
      this.recompute();
    });
    this.lw.on('error', (err) => {
      if (isRefusal(err)) this.refuse(err);
    });
  }

  /** This client's rank and the member count, once our key was first seen; undefined before. */
  get current(): MemberRank | undefined {
    return this.last;
  }

  start(): this {
    this.lw.start();
    this.registration.start().catch((err: unknown) => {
      if (isRefusal(err)) this.refuse(err as Error);
    });
    return this;
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.lw.close();
      if (this.timer) clearTimeout(this.timer);
      this.removeAllListeners();
      const p = this.registration.close().catch(() => undefined);
      this.closed = p;
      closing.add(p);
      void p.finally(() => closing.delete(p));
    }
    return this.closed;
  }

  private refuse(err: Error): void {
    if (this.closed) return;
    const listeners = this.listeners('refused');
    void this.close();
    for (const l of listeners) (l as (e: Error) => void)(err);
  }

  private recompute(): void {
    const mine = this.live.has(this.key);
    if (!mine && !this.wasMember) return;
    this.wasMember = true;
    const order = [...this.live.entries()].sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const rank = mine ? order.findIndex(([k]) => k === this.key) : order.length;
    const next = { rank, members: mine ? order.length : order.length + 1 };
    if (this.last && this.last.rank === next.rank && this.last.members === next.members) return;
    const first = this.last === undefined;
    this.last = next;
    if (first) this.log.info({ event: 'resolver.subset_member', key: this.key, rank: next.rank, members: next.members }, `subsetting as member ${next.rank} of ${next.members} (${this.key})`);
    this.schedule();
  }

  /** The first change after a quiet spell goes out on the next tick, later ones at most once per minIntervalMs. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const fire = () => {
      this.scheduled = false;
      this.timer = undefined;
      if (this.closed || !this.last) return;
      if (this.emitted && this.emitted.rank === this.last.rank && this.emitted.members === this.last.members) return;
      this.lastEmitAt = performance.now();
      this.emitted = this.last;
      this.emit('rank', this.last);
    };
    const wait = this.lastEmitAt + this.minIntervalMs - performance.now();
    if (wait <= 0) setImmediate(fire);
    else this.timer = setTimeout(fire, wait);
  }
}
