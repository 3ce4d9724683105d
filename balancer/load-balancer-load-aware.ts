import * as grpc from '@grpc/grpc-js';
import type { ChannelOptions } from '@grpc/grpc-js';
import { EndpointLoad } from './endpoint-load';
import { DEFAULT_TUNING, LARGE_POOL, newPickEntry, type EjectionCause, type LoadAwareTuning, type PickEntry } from './picker-load-aware';
import { reviewEjections } from './ejection-review';
import { ejectionTimeMs, markEjected } from './ejection-time';
import { failureRunLimit, refreshFailureFactor } from './ejection-failures';
import { FailureCodes } from './failure-codes';
import { DEFAULT_WEIGHT, type EndpointAttributes } from './endpoint-codec';
import { ENDPOINT_ATTRIBUTES_OPTION } from './resolver-etcd';
import { componentLogger, type Logger } from '../core/logger';
import { meshObserver } from '../core/mesh-observer';
import { LOAD_AWARE, LoadAwareConfig } from './load-balancer-load-aware-config';
import { LoadAwarePicker, type PickerHost } from './load-balancer-load-aware-picker';

type Endpoint = grpc.experimental.Endpoint;
type Picker = grpc.experimental.Picker;
type ChannelControlHelper = grpc.experimental.ChannelControlHelper;
type LeafLoadBalancer = grpc.experimental.LeafLoadBalancer;
const ConnectivityState = grpc.connectivityState;
type ConnectivityState = grpc.connectivityState;
const { QueuePicker, UnavailablePicker, LeafLoadBalancer: Leaf, createChildChannelControlHelper, subchannelAddressToString } = grpc.experimental;

export { LOAD_AWARE, LoadAwareConfig } from './load-balancer-load-aware-config';

/** How often ejections are reviewed, ms. */
const REVIEW_INTERVAL_MS = 25;

/**
 * ABSENT: not in the resolver's list (before it appears, after it leaves).
 * ACTIVE: in the rotation. EJECTED: too slow or failing too often for its
 * peers (ejection-review.ts); probes only. DRAINING: weight 0 in the
 * registry: no new calls while any other backend is READY, calls in flight
 * finish. (Connectivity is grpc-js's own: only READY backends are picked.)
 */
export type EndpointHealth = 'ABSENT' | 'ACTIVE' | 'EJECTED' | 'DRAINING';

/** A backend's weight 0 (endpoint-codec.ts DRAIN_WEIGHT): drained, not defaulted. */
const DRAINED = 0;

/** A review rebuilds a large pool's picker (its sampler's prefix sums) once a failure factor has moved by this much. */
const FACTOR_REBUILD_STEP = 0.1;

interface Child {
  addr: string;
  leaf: LeafLoadBalancer;
  entry: PickEntry;
  health: EndpointHealth;
}

/**
 * The `load_aware` policy (see picker-load-aware.ts for how it chooses):
 * one pick_first child per endpoint (grpc-js's LeafLoadBalancer, as
 * round_robin and weighted_round_robin use), children kept across resolver
 * updates so a weight change or a joiner does not reconnect anyone, weights
 * from the etcd resolver's endpoint attributes.
 */
export class LoadAwareLoadBalancer implements grpc.experimental.LoadBalancer, PickerHost {
  private readonly children = new Map<string, Child>();
  private currentState: ConnectivityState = ConnectivityState.IDLE;
  private updatesPaused = false;
  private lastError: string | null = null;
  private reviewTimer: NodeJS.Timeout | undefined;
  private reviewSoon: NodeJS.Immediate | undefined;
  private lastReviewAt = -Infinity;
  private readonly log: Logger;
  private decayMs = 300;
  tuning: LoadAwareTuning = DEFAULT_TUNING;
  /** Latency assumed for a backend not yet measured: its peers' median, so a joiner gets its share at once. */
  neutralMs = 1;
  /** Calls in flight over every backend (for the fair shares of a large pool's picks). */
  outstandingTotal = 0;
  /** Which statuses count against a backend (failure-codes.ts), from the config. */
  failureCodes = FailureCodes.DEFAULT;
  /** The peers' failure rate at the last review (ejection-failures.ts failureReference). */
  failureReference = 0;
  private reviewTicks = 0;
  /** Failure factors the current picker was built with (a large pool's sampler depends on them). */
  private factorsBuilt = new Map<PickEntry, number>();
  /** Whether every READY backend is drained and the calls go to them anyway (logged once per spell). */
  private allDrained = false;

  constructor(private readonly helper: ChannelControlHelper) {
    this.log = componentLogger('lb', { policy: LOAD_AWARE });
  }

  updateAddressList(endpoints: grpc.experimental.StatusOr<Endpoint[]>, config: grpc.experimental.TypedLoadBalancingConfig, options: ChannelOptions, resolutionNote: string): boolean {
    if (!(config instanceof LoadAwareConfig)) return false;
    this.tuning = config.tuning;
    this.decayMs = config.decayMs;
    this.failureCodes = config.failureCodes;
    if (!endpoints.ok) {
      if (this.children.size === 0) this.updateState(ConnectivityState.TRANSIENT_FAILURE, new UnavailablePicker(endpoints.error), endpoints.error.details);
      return true;
    }
    const attrs = parseAttributes(options[ENDPOINT_ATTRIBUTES_OPTION]);
    const childOptions = { ...options };
    delete childOptions[ENDPOINT_ATTRIBUTES_OPTION];
    if (endpoints.value.length === 0) {
      const msg = `No addresses resolved. Resolution note: ${resolutionNote}`;
      this.updateState(ConnectivityState.TRANSIENT_FAILURE, new UnavailablePicker({ details: msg }), msg);
      return false;
    }
    this.updatesPaused = true;
    // Warm-up protects a joiner against warm peers; the first set has no warm peers to be compared with.
    const since = this.children.size === 0 ? -Infinity : performance.now();
    const seen = new Set<string>();
    for (const endpoint of endpoints.value) {
      // The etcd resolver hands one address per endpoint: `host:port`, IPv6 bracketed, as registered.
      const addr = endpoint.addresses.map(subchannelAddressToString).join(',');
      seen.add(addr);
      const weight = attrs[addr]?.weight ?? DEFAULT_WEIGHT;
      let child = this.children.get(addr);
      if (!child) {
        const leaf = new Leaf(endpoint, createChildChannelControlHelper(this.helper, { updateState: (state, _picker, err) => this.onChildState(state, err) }), childOptions, resolutionNote);
        child = { addr, leaf, entry: newPickEntry(new EndpointLoad(addr, weight, this.decayMs), since, this.tuning.failureDecayMs), health: 'ABSENT' };
        this.children.set(addr, child);
        this.setHealth(child, weight === DRAINED ? 'DRAINING' : 'ACTIVE', weight === DRAINED ? 'resolved with weight 0' : 'resolved', undefined, { weight });
        leaf.startConnecting();
      } else {
        child.leaf.updateEndpoint(endpoint, childOptions);
        const from = child.entry.load.weight;
        if (from !== weight) {
          this.log.info({ event: 'lb.weight', addr, from, to: weight }, `${addr} weight ${from} -> ${weight}`);
          child.entry.load.weight = weight;
          if (weight === DRAINED) this.setHealth(child, 'DRAINING', 'weight 0: no new calls, calls in flight finish', undefined);
          else if (from === DRAINED) this.setHealth(child, 'ACTIVE', `weight ${weight}: back in the rotation`, undefined);
        }
      }
    }
    for (const [addr, child] of this.children) {
      if (!seen.has(addr)) {
        this.setHealth(child, 'ABSENT', 'no longer resolved', undefined);
        child.leaf.destroy();
        this.children.delete(addr);
      }
    }
    this.updatesPaused = false;
    this.calculateAndUpdateState();
    this.armReview();
    return true;
  }

  exitIdle(): void {
    // grpc-js calls this on every call (InternalChannel.getConfig), so it
    // must cost nothing: children are kept connected by
    // calculateAndUpdateState on every state change; only a policy that is
    // IDLE as a whole has anything to wake (round_robin's is a no-op). Over
    // 1,000 backends the loop cost ~70 µs a call.
    if (this.currentState !== ConnectivityState.IDLE) return;
    for (const c of this.children.values()) c.leaf.exitIdle();
  }

  resetBackoff(): void {
    // Connection backoff lives in the children's subchannels.
  }

  destroy(): void {
    if (this.reviewTimer) clearInterval(this.reviewTimer);
    this.reviewTimer = undefined;
    if (this.reviewSoon) clearImmediate(this.reviewSoon);
    this.reviewSoon = undefined;
    for (const c of this.children.values()) {
      if (c.health === 'EJECTED') meshObserver()?.ejection?.(c.addr, false, 'channel closed');
      c.leaf.destroy();
    }
    this.children.clear();
  }

  getTypeName(): string {
    return LOAD_AWARE;
  }

  private onChildState(state: ConnectivityState, err: string | null): void {
    // As round_robin: a dropped connection asks the resolver again (ours answers from its watch, never spinning).
    if (this.currentState === ConnectivityState.READY && state !== ConnectivityState.READY) this.helper.requestReresolution();
    if (err) this.lastError = err;
    this.calculateAndUpdateState();
  }

  private ready(): Child[] {
    return [...this.children.values()].filter((c) => c.leaf.getConnectivityState() === ConnectivityState.READY);
  }

  private calculateAndUpdateState(): void {
    if (this.updatesPaused) return;
    const ready = this.ready();
    if (ready.length > 0) {
      let pool = ready.filter((c) => c.health !== 'DRAINING');
      // Every READY backend drained (weight 0 everywhere, a mistake or the last
      // one left): failing every call would be worse than using them.
      const allDrained = pool.length === 0;
      if (allDrained !== this.allDrained) {
        this.allDrained = allDrained;
        if (allDrained) this.log.warn({ event: 'lb.all_drained', backends: ready.length }, `every READY backend has weight 0: calls go to them anyway until one has a weight`);
      }
      if (allDrained) pool = ready;
      this.factorsBuilt = new Map(pool.map((c) => [c.entry, c.entry.failureFactor]));
      this.updateState(
        ConnectivityState.READY,
        new LoadAwarePicker(
          pool.filter((c) => !c.entry.ejected),
          pool.filter((c) => c.entry.ejected),
          this,
        ),
        null,
      );
    } else {
      const states = [...this.children.values()].map((c) => c.leaf.getConnectivityState());
      if (states.includes(ConnectivityState.CONNECTING)) this.updateState(ConnectivityState.CONNECTING, new QueuePicker(this), null);
      else if (states.includes(ConnectivityState.TRANSIENT_FAILURE)) {
        const msg = `load_aware: No connection established. Last error: ${this.lastError}`;
        this.updateState(ConnectivityState.TRANSIENT_FAILURE, new UnavailablePicker({ details: msg }), msg);
      } else this.updateState(ConnectivityState.IDLE, new QueuePicker(this), null);
    }
    // Keep every child connected (as round_robin does): a backend is pickable the moment it is needed.
    for (const c of this.children.values()) if (c.leaf.getConnectivityState() === ConnectivityState.IDLE) c.leaf.exitIdle();
  }

  private updateState(state: ConnectivityState, picker: Picker, err: string | null): void {
    this.currentState = state;
    this.helper.updateState(state, picker, err);
  }

  private armReview(): void {
    if (this.reviewTimer) return;
    this.reviewTimer = setInterval(() => this.review(), REVIEW_INTERVAL_MS);
    this.reviewTimer.unref();
  }

  /**
   * PickerHost: a failure was booked on `entry`. A run long enough to eject
   * it is reviewed on the next turn of the event loop rather than up to a
   * tick later: a backend that broke all at once takes a quarter of the
   * calls until then.
   */
  failed(entry: PickEntry): void {
    if (this.reviewSoon || entry.ejected || entry.failures.consecutive < failureRunLimit(this.failureReference, this.tuning)) return;
    // A run that cannot be ejected (the bound is reached) would ask again on every failure: over a large pool a review costs up to a millisecond.
    if (performance.now() - this.lastReviewAt < REVIEW_INTERVAL_MS / 5) return;
    this.reviewSoon = setImmediate(() => {
      this.reviewSoon = undefined;
      this.reviewNow();
    });
  }

  /** Periodic: neutral latency for newcomers, and ejection / re-admission (each logged OLD -> NEW). */
  private review(): void {
    // Over a large set a review costs ~0.7 µs a backend (0.7 ms at 1,000):
    // review about every 25 ms per 100 backends instead of every tick.
    if (++this.reviewTicks % Math.max(1, Math.ceil(this.children.size / 100)) !== 0) return;
    this.reviewNow();
  }

  private reviewNow(): void {
    this.lastReviewAt = performance.now();
    // Drained backends get no calls, so they have nothing to be judged on.
    const ready = this.ready().filter((c) => c.health !== 'DRAINING');
    const now = performance.now();
    const r = reviewEjections(
      ready.map((c) => c.entry),
      now,
      this.tuning,
    );
    if (r.referenceMs !== undefined) this.neutralMs = r.referenceMs;
    this.failureReference = r.failureReference;
    // A child no longer READY is out of the picker anyway; it comes back ACTIVE and re-measured, failures forgotten.
    const readySet = new Set(ready);
    for (const c of this.children.values()) {
      if (c.entry.ejected && !readySet.has(c) && c.health === 'EJECTED') {
        c.entry.failures.reset();
        this.setHealth(c, 'ACTIVE', 'connection left READY', r.referenceMs);
      }
    }
    let changed = false;
    for (const e of r.readmit) {
      e.load.forgetPeak();
      const forFailures = e.ejectedFor === 'failures';
      // Judged afresh: its probe answered; the multiplier remembers how often it was out.
      e.failures.reset();
      this.setHealth(this.childOf(e), 'ACTIVE', forFailures ? 'probe answered after its time out' : 'mean latency back near its peers', r.referenceMs);
      changed = true;
    }
    for (const e of r.extend) {
      this.setHealth(this.childOf(e), 'EJECTED', 'probe failed: out again, for longer', r.referenceMs, {}, 'failures');
      changed = true;
    }
    for (const e of r.eject) {
      const cause = r.cause.get(e)!;
      const run = e.failures.consecutive;
      const reason = cause === 'latency' ? 'mean latency far above its peers' : run >= failureRunLimit(r.failureReference, this.tuning) ? `${run} failures in a row` : 'fails far more often than its peers';
      this.setHealth(this.childOf(e), 'EJECTED', reason, r.referenceMs, {}, cause);
      changed = true;
    }
    // Failure factors decay with time as well as with calls; a large pool's sampler is rebuilt once they have moved.
    for (const c of ready) {
      refreshFailureFactor(c.entry, now, r.failureReference, this.tuning);
      if (!changed && Math.abs(c.entry.failureFactor - (this.factorsBuilt.get(c.entry) ?? 1)) >= FACTOR_REBUILD_STEP) changed = ready.length > LARGE_POOL;
    }
    if (changed) this.calculateAndUpdateState();
  }

  private childOf(e: PickEntry): Child {
    return this.children.get(e.load.addr)!;
  }

  /**
   * The one setter of a backend's health. EJECTED takes its `cause`; an
   * EJECTED backend ejected again (a failed probe) is logged EJECTED ->
   * EJECTED with its new time out; any other same-state call is a no-op.
   */
  private setHealth(c: Child, next: EndpointHealth, reason: string, referenceMs: number | undefined, fields: Record<string, unknown> = {}, cause?: EjectionCause): void {
    const prev = c.health;
    if (prev === next && next !== 'EJECTED') return;
    c.health = next;
    const now = performance.now();
    markEjected(c.entry, next === 'EJECTED' ? (cause ?? 'latency') : undefined, now, this.tuning);
    const e = c.entry;
    const failures = e.failures.volume(now) > 0 ? { failureRate: round(e.failures.rate()), failureReference: round(this.failureReference) } : {};
    const ejection = next === 'EJECTED' ? { cause: e.ejectedFor, multiplier: e.multiplier, ejectionMs: ejectionTimeMs(e, this.tuning) } : {};
    if (next === 'EJECTED' || prev === 'EJECTED') meshObserver()?.ejection?.(c.addr, next === 'EJECTED', e.ejectedFor ?? cause ?? 'latency');
    this.log.info(
      { event: 'lb.endpoint_state', addr: c.addr, from: prev, to: next, reason, ...ejection, meanMs: round(e.load.meanLatencyMs(now)), stallMs: round(e.load.stallMs(now)), referenceMs: round(referenceMs), ...failures, outstanding: e.load.outstanding, ...fields },
      `${c.addr} ${prev} -> ${next}: ${reason}`,
    );
  }
}

function round(n: number | undefined): number | undefined {
  return n === undefined ? undefined : Math.round(n * 100) / 100;
}

function parseAttributes(raw: unknown): Record<string, EndpointAttributes> {
  if (typeof raw !== 'string') return {};
  try {
    return JSON.parse(raw) as Record<string, EndpointAttributes>;
  } catch {
    return {};
  }
}

let registered = false;

/** Register `load_aware` with grpc-js (idempotent). */
export function registerLoadAwareBalancer(): void {
  if (registered) return;
  grpc.experimental.registerLoadBalancerType(LOAD_AWARE, LoadAwareLoadBalancer, LoadAwareConfig);
  registered = true;
}
