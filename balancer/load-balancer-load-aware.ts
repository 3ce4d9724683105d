import * as grpc from '@grpc/grpc-js';
import type { ChannelOptions } from '@grpc/grpc-js';
import { EndpointLoad } from './endpoint-load';
import { DEFAULT_TUNING, markEjected, newPickEntry, reviewEjections, type LoadAwareTuning, type PickEntry } from './picker-load-aware';
import { DEFAULT_WEIGHT, type EndpointAttributes } from './endpoint-codec';
import { ENDPOINT_ATTRIBUTES_OPTION } from './resolver-etcd';
import { componentLogger, type Logger } from '../core/logger';
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
 * ACTIVE: in the rotation. EJECTED: too slow for its peers; probes only.
 * (Connectivity is grpc-js's own: only READY backends are picked at all.)
 */
export type EndpointHealth = 'ABSENT' | 'ACTIVE' | 'EJECTED';

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
  private readonly log: Logger;
  private decayMs = 300;
  tuning: LoadAwareTuning = DEFAULT_TUNING;
  /** Latency assumed for a backend not yet measured: its peers' median, so a joiner gets its share at once. */
  neutralMs = 1;
  /** Calls in flight over every backend (for the fair shares of a large pool's picks). */
  outstandingTotal = 0;
  private reviewTicks = 0;

  constructor(private readonly helper: ChannelControlHelper) {
    this.log = componentLogger('lb', { policy: LOAD_AWARE });
  }

  updateAddressList(endpoints: grpc.experimental.StatusOr<Endpoint[]>, config: grpc.experimental.TypedLoadBalancingConfig, options: ChannelOptions, resolutionNote: string): boolean {
    if (!(config instanceof LoadAwareConfig)) return false;
    this.tuning = config.tuning;
    this.decayMs = config.decayMs;
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
        child = { addr, leaf, entry: newPickEntry(new EndpointLoad(addr, weight, this.decayMs), since), health: 'ABSENT' };
        this.children.set(addr, child);
        this.setHealth(child, 'ACTIVE', 'resolved', undefined, { weight });
        leaf.startConnecting();
      } else {
        child.leaf.updateEndpoint(endpoint, childOptions);
        if (child.entry.load.weight !== weight) {
          this.log.info({ event: 'lb.weight', addr, from: child.entry.load.weight, to: weight }, `${addr} weight ${child.entry.load.weight} -> ${weight}`);
          child.entry.load.weight = weight;
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
    for (const c of this.children.values()) c.leaf.destroy();
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
      this.updateState(
        ConnectivityState.READY,
        new LoadAwarePicker(
          ready.filter((c) => !c.entry.ejected),
          ready.filter((c) => c.entry.ejected),
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

  /** Periodic: neutral latency for newcomers, and ejection / re-admission (each logged OLD -> NEW). */
  private review(): void {
    // Over a large set a review costs ~0.7 µs a backend (0.7 ms at 1,000):
    // review about every 25 ms per 100 backends instead of every tick.
    if (++this.reviewTicks % Math.max(1, Math.ceil(this.children.size / 100)) !== 0) return;
    const ready = this.ready();
    const now = performance.now();
    const r = reviewEjections(
      ready.map((c) => c.entry),
      now,
      this.tuning,
    );
    if (r.referenceMs !== undefined) this.neutralMs = r.referenceMs;
    // A child no longer READY is out of the picker anyway; it comes back ACTIVE and re-measured.
    const readySet = new Set(ready);
    for (const c of this.children.values()) if (c.entry.ejected && !readySet.has(c)) this.setHealth(c, 'ACTIVE', 'connection left READY', r.referenceMs);
    if (r.eject.length === 0 && r.readmit.length === 0) return;
    for (const e of r.readmit) {
      e.load.forgetPeak();
      this.setHealth(this.childOf(e), 'ACTIVE', 'mean latency back near its peers', r.referenceMs);
    }
    for (const e of r.eject) this.setHealth(this.childOf(e), 'EJECTED', 'mean latency far above its peers', r.referenceMs);
    this.calculateAndUpdateState();
  }

  private childOf(e: PickEntry): Child {
    return this.children.get(e.load.addr)!;
  }

  /** The one setter of a backend's health. */
  private setHealth(c: Child, next: EndpointHealth, reason: string, referenceMs: number | undefined, fields: Record<string, unknown> = {}): void {
    const prev = c.health;
    if (prev === next) return;
    c.health = next;
    const now = performance.now();
    markEjected(c.entry, next === 'EJECTED', now, this.tuning);
    this.log.info(
      { event: 'lb.endpoint_state', addr: c.addr, from: prev, to: next, reason, ejections: c.entry.ejections, meanMs: round(c.entry.load.meanLatencyMs(now)), stallMs: round(c.entry.load.stallMs(now)), referenceMs: round(referenceMs), outstanding: c.entry.load.outstanding, ...fields },
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
