import * as grpc from '@grpc/grpc-js';
import type { HealthWatch } from './health-check-watch';

type SubchannelInterface = grpc.experimental.SubchannelInterface;
type ConnectivityStateListener = grpc.experimental.ConnectivityStateListener;
type Subchannel = ReturnType<SubchannelInterface['getRealSubchannel']>;
const { CONNECTING, READY } = grpc.connectivityState;

/** Where wrappers find the shared Watch of their real subchannel (the policy keeps one per backend). */
export interface HealthWatchRegistry {
  /** The Watch of `real`, started if none runs; `fn` is told of every change. */
  acquire(real: Subchannel, fn: () => void): HealthWatch;
  /** The Watch of `real` if one runs (nothing started). */
  peek(real: Subchannel): HealthWatch | undefined;
  /** `fn` is no longer told; the Watch stops when nobody is left. */
  release(real: Subchannel, fn: () => void): void;
}

/**
 * A subchannel as the health-checking policy hands it to its child
 * (load_aware, round_robin: one pick_first leaf per backend), in the way
 * grpc-js's outlier_detection ejects: a BaseSubchannelWrapper whose
 * `setHealthy` follows the backend's health Watch. A picked pick_first leaf
 * whose subchannel turns unhealthy reports TRANSIENT_FAILURE, so its parent
 * stops picking it, and READY again when healthy, on the same connection.
 *
 * One thing setHealthy cannot say is "connected, not answered yet": until
 * the first answer the wrapper reports CONNECTING instead of READY (A17), so
 * calls queued for a new connection wait for it rather than fail.
 *
 * It takes part in its Watch while referenced or listened to; the policy's
 * picker hands grpc-js the wrapped subchannel, never this wrapper.
 */
export class HealthCheckedSubchannel extends grpc.experimental.BaseSubchannelWrapper {
  private readonly listeners = new Set<ConnectivityStateListener>();
  private watch: HealthWatch | undefined;
  private refs = 0;
  private reported: grpc.connectivityState;
  private readonly real: Subchannel;

  constructor(
    child: SubchannelInterface,
    private readonly registry: HealthWatchRegistry,
  ) {
    super(child);
    this.real = child.getRealSubchannel();
    this.reported = this.getConnectivityState();
  }

  /** The subchannel this one wraps (what the picker hands grpc-js). */
  get wrapped(): SubchannelInterface {
    return this.child;
  }

  override getConnectivityState(): grpc.connectivityState {
    const state = this.child.getConnectivityState();
    if (state !== READY) return state;
    const watch = this.watch ?? this.registry.peek(this.real);
    return !watch || watch.pending ? CONNECTING : READY;
  }

  override addConnectivityStateListener(listener: ConnectivityStateListener): void {
    this.listeners.add(listener);
    this.sync();
  }

  override removeConnectivityStateListener(listener: ConnectivityStateListener): void {
    this.listeners.delete(listener);
    this.sync();
  }

  override ref(): void {
    super.ref();
    this.refs++;
    this.sync();
  }

  override unref(): void {
    this.refs--;
    super.unref();
    this.sync();
  }

  /** Join the Watch while referenced or listened to, leave it when neither. */
  private sync(): void {
    const wanted = this.refs > 0 || this.listeners.size > 0;
    if (wanted && !this.watch) {
      this.watch = this.registry.acquire(this.real, this.onWatch);
      this.onWatch();
    } else if (!wanted && this.watch) {
      this.registry.release(this.real, this.onWatch);
      this.watch = undefined;
    }
  }

  /**
   * After any change of the connection or the health: show the new state
   * and health in the order pick_first needs. Becoming READY: health first,
   * so a backend whose first answer is NOT_SERVING is never picked for a
   * moment. Leaving READY: the state first, so the leaf drops the pick
   * before a health change could make it report READY on a dead connection.
   */
  private readonly onWatch = (): void => {
    const watch = this.watch;
    if (!watch) return;
    const next = this.getConnectivityState();
    const prev = this.reported;
    if (next === READY) this.setHealthy(watch.healthy);
    if (next !== prev) {
      this.reported = next;
      for (const l of [...this.listeners]) l(this, prev, next, watch.keepaliveTime, watch.lastError);
    }
    if (next !== READY) this.setHealthy(watch.healthy);
  };
}
