import * as grpc from '@grpc/grpc-js';
import { Backoff } from '../core/backoff';
import type { Logger } from '../core/logger';
import { healthClientOn, type HealthClient, type HealthCheckResponse } from './health-check-proto';
import { meshObserver } from '../core/mesh-observer';

type Subchannel = ReturnType<grpc.experimental.SubchannelInterface['getRealSubchannel']>;
const { READY } = grpc.connectivityState;

/**
 * What one backend's health Watch says (gRPC A17, client-side health checking):
 *
 * - IDLE: not connected; nothing asked.
 * - WATCHING: connected, Watch sent, no answer yet. The subchannel is shown
 *   CONNECTING meanwhile (A17: calls queued for a new connection must not
 *   race the first answer).
 * - SERVING, NOT_SERVING: as the server answered (UNKNOWN and
 *   SERVICE_UNKNOWN count as NOT_SERVING: only SERVING takes calls).
 * - UNIMPLEMENTED: the server has no health service: healthy, as A17 says
 *   (logged once at error level per backend and service, not retried).
 * - FAILED: the Watch ended otherwise (any other status, or the server
 *   closed it): unhealthy (A17: TRANSIENT_FAILURE) until a retry, after an
 *   exponential backoff, is answered.
 */
export type HealthCheckState = 'IDLE' | 'WATCHING' | 'SERVING' | 'NOT_SERVING' | 'UNIMPLEMENTED' | 'FAILED';

/** States in which a backend takes no calls. */
const UNHEALTHY: ReadonlySet<HealthCheckState> = new Set(['NOT_SERVING', 'FAILED']);

/** Backend + service pairs already logged as UNIMPLEMENTED in this process (A17: log it, once). */
const toldUnimplemented = new Set<string>();

/** Retry backoff of a failed Watch, ms: the channel's reconnect backoff (A17 asks for exponential backoff; grpc-go uses its connection backoff too). */
export interface HealthBackoff {
  initialMs: number;
  maxMs: number;
}

/**
 * The health Watch of one real subchannel, shared by every wrapper of it in
 * one policy instance (a resolver update makes pick_first create a new
 * wrapper for the same backend: it finds the state known, no new stream).
 * It follows the subchannel: a Watch while READY, none otherwise (a GOAWAY
 * or a drop cancels it, as A17 says). Subscribers are told after every
 * change of the subchannel's connectivity or of the health state; the state
 * changes only in `setState`, logged `OLD -> NEW`.
 */
export class HealthWatch {
  private stateValue: HealthCheckState = 'IDLE';
  private call: grpc.ClientReadableStream<HealthCheckResponse> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private backoff: Backoff;
  /** A17: after a message, the next attempt starts at once; only repeated failures back off. */
  private retryAtOnce = false;
  private readonly client: HealthClient;
  private readonly subscribers = new Set<() => void>();
  private closed = false;
  /** The last connectivity event's keepalive time and error, passed on by the wrappers. */
  keepaliveTime = -1;
  lastError: string | undefined;

  constructor(
    readonly real: Subchannel,
    private service: string,
    backoff: HealthBackoff,
    private readonly log: Logger,
  ) {
    this.backoff = new Backoff(backoff.initialMs, backoff.maxMs);
    // The subchannel's own channel: calls on it bypass the LB policy and
    // every interceptor, so health checks are neither balanced nor counted as traffic.
    this.client = healthClientOn(real.getChannel());
    real.addConnectivityStateListener(this.onConnectivity);
    if (real.getConnectivityState() === READY) this.startCall('connected');
  }

  get state(): HealthCheckState {
    return this.stateValue;
  }

  /** True unless the server said NOT_SERVING or the Watch failed. */
  get healthy(): boolean {
    return !UNHEALTHY.has(this.stateValue);
  }

  /** Connected, asked, not answered yet. */
  get pending(): boolean {
    return this.stateValue === 'WATCHING' || (this.stateValue === 'IDLE' && this.real.getConnectivityState() === READY);
  }

  subscribe(fn: () => void): void {
    this.subscribers.add(fn);
  }

  /** Returns true when nobody is left (the owner then closes it). */
  unsubscribe(fn: () => void): boolean {
    this.subscribers.delete(fn);
    return this.subscribers.size === 0;
  }

  /** Watch another service name (a new service config): ask again at once. */
  setService(service: string): void {
    if (service === this.service) return;
    this.service = service;
    if (this.real.getConnectivityState() === READY) this.startCall(`service name now ${JSON.stringify(service)}`);
  }

  setBackoff(b: HealthBackoff): void {
    this.backoff = new Backoff(b.initialMs, b.maxMs);
  }

  /** Stop watching for good. Idempotent; nothing is told after it. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopCall();
    this.subscribers.clear();
    this.real.removeConnectivityStateListener(this.onConnectivity);
    // The backend left this channel: its health series goes with it.
    meshObserver()?.healthState?.(this.real.getAddress(), 'CLOSED');
    // The client is not closed: its channel is the subchannel's own, shared (grpc-js's ORCA watcher uses it too).
  }

  private readonly onConnectivity = (_s: unknown, _prev: grpc.connectivityState, next: grpc.connectivityState, keepaliveTime: number, err?: string): void => {
    if (this.closed) return;
    this.keepaliveTime = keepaliveTime;
    this.lastError = err;
    if (next === READY) this.startCall('connected');
    else {
      this.stopCall();
      this.setState('IDLE', `connection ${grpc.connectivityState[next]}`);
    }
    this.tell();
  };

  private startCall(reason: string): void {
    this.stopCall();
    const call = this.client.Watch({ service: this.service });
    this.call = call;
    // Only a new connection waits for its first answer. A retry keeps FAILED,
    // a new service name the last answer, until answered: showing CONNECTING
    // again would make pick_first drop the picked subchannel (and its Watch).
    if (this.stateValue === 'IDLE') this.setState('WATCHING', reason);
    call.on('data', (res: HealthCheckResponse) => {
      if (this.call !== call) return;
      this.retryAtOnce = true;
      this.backoff.reset();
      this.setState(res.status === 'SERVING' ? 'SERVING' : 'NOT_SERVING', `the server answered ${res.status}`);
      this.tell();
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (this.call === call) this.callEnded(err.code, err.details);
    });
    call.on('status', (s: grpc.StatusObject) => {
      if (this.call === call && s.code === grpc.status.OK) this.callEnded(s.code, 'the server ended the Watch');
    });
  }

  private stopCall(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const call = this.call;
    this.call = undefined;
    call?.cancel();
  }

  private callEnded(code: grpc.status, details: string): void {
    this.call = undefined;
    // A call cut by the connection going: the connectivity event handles it (IDLE, then a new Watch when READY again).
    if (this.real.getConnectivityState() !== READY) return;
    if (code === grpc.status.UNIMPLEMENTED) {
      const key = `${this.real.getAddress()}|${this.service}`;
      if (!toldUnimplemented.has(key)) {
        toldUnimplemented.add(key);
        this.log.error({ event: 'health.unimplemented', addr: this.real.getAddress(), service: this.service }, `${this.real.getAddress()} does not serve grpc.health.v1.Health: treated as healthy without health checking (gRPC A17)`);
      }
      this.setState('UNIMPLEMENTED', 'the server has no health service');
    } else {
      this.setState('FAILED', `Watch ended: ${grpc.status[code] ?? code} ${details}`);
      const delay = this.retryAtOnce ? 0 : this.backoff.next();
      this.retryAtOnce = false;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        if (!this.closed && this.real.getConnectivityState() === READY) this.startCall(`retry after ${delay} ms`);
      }, delay);
      this.retryTimer.unref();
    }
    this.tell();
  }

  private tell(): void {
    for (const fn of [...this.subscribers]) fn();
  }

  /**
   * The one setter of the state. Routine steps (a connection's first
   * SERVING) at debug; what decides picks at info (NOT_SERVING is the
   * server's own word, a drain's first step); a failed Watch at warn.
   */
  private setState(next: HealthCheckState, reason: string): void {
    const prev = this.stateValue;
    if (prev === next) return;
    this.stateValue = next;
    meshObserver()?.healthState?.(this.real.getAddress(), next);
    const routine = next === 'IDLE' || next === 'WATCHING' || (prev === 'WATCHING' && (next === 'SERVING' || next === 'UNIMPLEMENTED'));
    const fields = { event: 'health.state', addr: this.real.getAddress(), service: this.service, from: prev, to: next, reason };
    const msg = `${this.real.getAddress()} health ${prev} -> ${next}: ${reason}`;
    if (routine) this.log.debug(fields, msg);
    else if (next === 'FAILED') this.log.warn(fields, msg);
    else this.log.info(fields, msg);
  }
}
