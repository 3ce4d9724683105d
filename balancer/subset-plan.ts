import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { ChannelOptions } from '@grpc/grpc-js';
import type { Logger } from '../core/logger';
import { errorText } from '../core/etcd-errors';
import { AUTO_SUBSET_ABOVE, nextHeld, subsetOptionsOf, type SubsetChoice } from './subset';
import { autoSubsetSize, idealSubset, identityKey, identitySeed, type SubsetIdentity } from './subset-auto';
import { membersPrefix, SubsetMembers } from './subset-members';

/**
 * How long the first subset waits for this client's membership rank before
 * it goes ahead with the hashed id (and switches, make before break, when
 * the rank comes). The rank is usually there a round trip or two after the
 * registry's listing; a longer wait would come out of the first calls'
 * deadlines whenever etcd is slow.
 */
export const MEMBERS_GRACE_MS = 100;

/**
 * Make before break: a backend a subset change drops while it is still
 * registered (a new rank, a join re-dealing the subsets, auto's taper) is
 * handed over for this long after the change, beside its replacement, so
 * calls keep a connected backend while the new one connects and answers its
 * first health check. Channel option SUBSET_OVERLAP_OPTION (ms) overrides it;
 * 0 drops at once. A backend that leaves the registry goes at once.
 */
export const SUBSET_OVERLAP_MS = 2_000;
/** Channel option (a number, ms): see SUBSET_OVERLAP_MS. */
export const SUBSET_OVERLAP_OPTION = 'etcd_mesh.subset_overlap_ms';

/** Member prefixes whose refusal this process has warned about: once each. */
const warnedRefused = new Set<string>();

/** Events of a SubsetPlan. */
export interface SubsetPlanEvents {
  /** The subset would now differ for the same registry (the rank changed, the wait for it ended): pick again. */
  change: [];
}

/**
 * One resolver's subsetting: what to hand grpc-js out of each registry
 * snapshot, and who this client is among the others. The resolver calls
 * `pick` on every snapshot and picks again on `change`; everything about
 * subsets lives here, not in the resolver.
 *
 * - Size: `--subset N`, or auto's taper (subset-auto.ts).
 * - Identity: an id given (`--client-id`) or hashed (`--client-id hash`):
 *   SRE subsets, exactly as before the membership. Otherwise the rank among
 *   the live subsetting clients of the service (subset-members.ts), joined
 *   when the registry first outgrows the size (a client that never subsets
 *   writes nothing), on the aperture ring. The first subset waits up to
 *   MEMBERS_GRACE_MS for the rank, then goes ahead on the hashed id until
 *   the rank comes. etcd refusing the member key (permission, credentials):
 *   the hashed id for good, one warning per process and member prefix.
 * - Stateful (nextHeld): backends that only left are replaced in the
 *   subsets that held them; a join, or a new rank, takes the ideal.
 */
export class SubsetPlan extends EventEmitter<SubsetPlanEvents> {
  private client: Etcd3 | undefined;
  private members: SubsetMembers | undefined;
  /** Why etcd refused the membership: then the hashed id for good. */
  private refused: string | undefined;
  private graceOver = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private fallbackLogged = false;
  /** The registry and the subset last picked, and who picked it (`*`: every backend, no identity needed). */
  private state: { registry: string[]; held: string[]; who: string } | undefined;
  /** auto: whether the registry is above AUTO_SUBSET_ABOVE (logged on each crossing). */
  private engaged = false;
  /** The set last handed over: the subset plus what still overlaps. */
  private delivered: string[] | undefined;
  /** Backends dropped from the subset but still handed over, until when (performance.now() ms). */
  private overlap = new Map<string, number>();
  private overlapTimer: NodeJS.Timeout | undefined;
  private readonly overlapMs: number;
  /** pick() held a delivery back for the rank: the rank's arrival must pick again. */
  private waiting = false;

  /** The plan a channel's options ask for, or undefined when subsetting is off (`--subset 0`). */
  static fromOptions(options: ChannelOptions, registryPrefix: string, log: Logger): SubsetPlan | undefined {
    const choice = subsetOptionsOf(options);
    const overlap = options[SUBSET_OVERLAP_OPTION];
    const overlapMs = typeof overlap === 'number' && Number.isFinite(overlap) && overlap >= 0 ? overlap : SUBSET_OVERLAP_MS;
    return choice ? new SubsetPlan(choice, registryPrefix, log, overlapMs) : undefined;
  }

  constructor(
    readonly choice: SubsetChoice,
    private readonly registryPrefix: string,
    private readonly log: Logger,
    overlapMs = SUBSET_OVERLAP_MS,
  ) {
    super();
    this.overlapMs = overlapMs;
    if (!choice.auto) {
      const ids = choice.members ? `its rank among the clients under ${membersPrefix(registryPrefix)}` : `client id ${choice.clientId}`;
      log.info({ event: 'resolver.subset', size: choice.size, ...(choice.members ? { ids: 'members' } : { clientId: choice.clientId }) }, `subsetting: ${choice.size} backends per client, ${ids}`);
    }
  }

  /**
   * The etcd client to keep the membership on (the resolver's); without one
   * the id is hashed. `--subset N` joins at once, so the rank is there about
   * when the registry's first listing is; auto joins only once the registry
   * outgrows AUTO_SUBSET_ABOVE.
   */
  attach(client: Etcd3): void {
    this.client = client;
    if (!this.choice.auto && this.choice.members && !this.members) this.join(client);
  }

  /**
   * What to hand grpc-js out of `registry` (every registered address, no
   * duplicates): the subset, or every backend when there are no more than
   * the size. Undefined: hold this delivery (the rank is coming; `change`
   * follows within MEMBERS_GRACE_MS). An empty registry gives [] and leaves
   * the state alone (the resolver holds its last set back).
   */
  pick(registry: string[], revision: string): string[] | undefined {
    const total = registry.length;
    if (total === 0) return [];
    const auto = this.choice.auto;
    const size = auto ? autoSubsetSize(total) : this.choice.size;
    let held: string[];
    let who = '*';
    let identity: SubsetIdentity | undefined;
    if (total <= size) {
      held = auto ? registry : [...registry].sort();
    } else {
      identity = this.identity();
      this.waiting = identity === undefined;
      if (identity === undefined) return undefined;
      who = identityKey(identity);
      const prev = this.state && (this.state.who === who || this.state.who === '*') ? this.state : undefined;
      held = nextHeld(prev?.registry, prev?.held, registry, idealSubset(registry, identity, size, auto), size, identitySeed(identity, this.members?.key));
    }
    if (auto && total > AUTO_SUBSET_ABOVE !== this.engaged) {
      this.engaged = total > AUTO_SUBSET_ABOVE;
      this.log.info(
        { event: 'resolver.subset_auto', engaged: this.engaged, size, registered: total, above: AUTO_SUBSET_ABOVE, ...(identity ? { who } : {}) },
        this.engaged ? `registry holds ${total} backends (> ${AUTO_SUBSET_ABOVE}): subsetting to ${size}, ${who}` : `registry holds ${total} backends: using every one`,
      );
    }
    if (!auto || who !== '*' || (this.state && this.state.who !== '*')) {
      const was = new Set(this.state?.held ?? []);
      const added = held.filter((b) => !was.has(b));
      const now = new Set(held);
      const removed = [...was].filter((b) => !now.has(b));
      if (added.length || removed.length) {
        this.log.info(
          { event: 'resolver.subset_change', revision, added, removed, size: held.length, registered: total, who, overlapMs: this.overlapMs },
          `subset: +${added.length} -${removed.length}, ${held.length} of ${total} (${who === '*' ? 'every one' : who})`,
        );
      }
    }
    this.state = { registry, held, who };
    return this.withOverlap(registry, held);
  }

  /** `held` plus the backends it just dropped that are still registered, for overlapMs (make before break). */
  private withOverlap(registry: string[], held: string[]): string[] {
    const prev = this.delivered;
    if (this.overlapMs <= 0 || !prev || held.length >= registry.length) {
      this.overlap.clear();
      this.delivered = held;
      return held;
    }
    const now = performance.now();
    const reg = new Set(registry);
    const keep = new Set(held);
    for (const b of prev) if (!keep.has(b) && reg.has(b) && !this.overlap.has(b)) this.overlap.set(b, now + this.overlapMs);
    let next = Infinity;
    for (const [b, until] of this.overlap) {
      if (until <= now || !reg.has(b) || keep.has(b)) this.overlap.delete(b);
      else next = Math.min(next, until);
    }
    if (this.overlapTimer) clearTimeout(this.overlapTimer);
    this.overlapTimer = undefined;
    if (next < Infinity) {
      this.overlapTimer = setTimeout(() => this.emit('change'), Math.max(1, Math.ceil(next - now)));
      this.overlapTimer.unref();
    }
    const out = this.overlap.size ? [...held, ...this.overlap.keys()].sort() : held;
    this.delivered = out;
    return out;
  }

  /** Forget everything and leave the membership (the resolver is destroyed). */
  reset(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    if (this.overlapTimer) clearTimeout(this.overlapTimer);
    this.overlap.clear();
    this.delivered = undefined;
    void this.members?.close();
    this.members = undefined;
    this.client = undefined;
    this.refused = undefined;
    this.graceOver = false;
    this.fallbackLogged = false;
    this.state = undefined;
    this.engaged = false;
    this.waiting = false;
  }

  /** Who this client is now; undefined while the first rank is awaited (within the grace). */
  private identity(): SubsetIdentity | undefined {
    const hashed: SubsetIdentity = { kind: 'id', id: this.choice.clientId };
    if (!this.choice.members || !this.client || this.refused !== undefined) return hashed;
    if (!this.members) this.join(this.client);
    const r = this.members!.current;
    if (r) return { kind: 'rank', rank: r.rank, members: r.members };
    if (!this.graceOver) return undefined;
    if (!this.fallbackLogged) {
      this.fallbackLogged = true;
      this.log.info(
        { event: 'resolver.subset_member_pending', key: this.members!.key, waitedMs: MEMBERS_GRACE_MS, clientId: this.choice.clientId },
        `no membership rank under ${this.members!.prefix} after ${MEMBERS_GRACE_MS} ms: client id ${this.choice.clientId} (hashed) until it comes`,
      );
    }
    return hashed;
  }

  private join(client: Etcd3): void {
    const m = new SubsetMembers(client, this.registryPrefix, this.log);
    this.members = m;
    // A new rank matters only while subsetting (or while a delivery waits for it).
    m.on('rank', () => (this.waiting || (this.state && this.state.who !== '*')) && this.emit('change'));
    m.on('refused', (err) => {
      if (this.members !== m) return;
      this.refused = errorText(err);
      const fields = { event: 'resolver.subset_members_refused', prefix: m.prefix, reason: this.refused, clientId: this.choice.clientId };
      const text = `etcd refused this client's subsetting membership under ${m.prefix} (${this.refused}): using client id ${this.choice.clientId}, a hash of host name and pid (balance is statistical); give the role readwrite on ${m.prefix}, or pass --client-id`;
      if (warnedRefused.has(m.prefix)) this.log.debug(fields, text);
      else {
        warnedRefused.add(m.prefix);
        this.log.warn(fields, text);
      }
      this.emit('change');
    });
    this.graceTimer = setTimeout(() => {
      this.graceOver = true;
      if (this.members === m && !m.current && this.refused === undefined) this.emit('change');
    }, MEMBERS_GRACE_MS);
    this.graceTimer.unref();
    m.start();
  }
}
