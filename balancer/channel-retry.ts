import * as grpc from '@grpc/grpc-js';
import type { InterceptingCallInterface } from '@grpc/grpc-js/build/src/client-interceptors';
import { RetryBudget } from './retry-budget';
import { meshObserver } from '../core/mesh-observer';

/**
 * Hedging and UNAVAILABLE retries for idempotent unary methods, within a
 * retry budget (retry-budget.ts). Done here rather than by grpc-js's
 * `hedgingPolicy` for three reasons:
 * - Budget: grpc-js's retryThrottling counts failures only, and hedges in a
 *   brownout do not fail, they pile up; ours counts every extra attempt.
 * - Adaptive delay: the next attempt is sent once the call has taken
 *   `hedgeFactor` x the channel's recent mean latency (at least `minHedgeMs`,
 *   at most `maxHedgeMs`). A call stuck on a hung or slow backend is re-sent
 *   within a few typical latencies; when every backend is slow the mean
 *   rises with them and hedges stop.
 * - Commit: grpc-js commits an attempt once response headers arrive, so a
 *   backend SIGKILLed between headers and trailers fails the call
 *   UNAVAILABLE although another backend would answer. Here nothing is
 *   delivered before an attempt's status: the first OK wins, an UNAVAILABLE
 *   attempt is replaced at once, any other status ends the call.
 *
 * Every attempt goes through the channel's picker, so it lands where the
 * balancer thinks best (the load-aware policy counts the first attempt as
 * outstanding and looks elsewhere). Losers are cancelled. The call's
 * deadline covers all attempts. Pattern: grpc-node's interceptor retry
 * example (gRFC L5).
 */
export interface HedgingOptions {
  /** Fully-qualified idempotent services (`helloworld.Greeter`); other methods pass through untouched. */
  idempotentServices: string[];
  /** Attempts per call, first included. Default 5. */
  maxAttempts?: number;
  /** Bounds of the hedging delay, ms. Defaults 10 and 400. */
  minHedgeMs?: number;
  maxHedgeMs?: number;
  /** Hedge after this many times the recent mean latency. Default 4. */
  hedgeFactor?: number;
  /** The budget extra attempts are drawn from (one per channel). */
  budget?: RetryBudget;
}

/** Recent mean latency of successful calls through one channel, ms (EWMA by count, ~50 calls). */
class MeanLatency {
  value: number | undefined;
  add(ms: number): void {
    this.value = this.value === undefined ? ms : this.value + 0.02 * (ms - this.value);
  }
}

interface Attempt {
  call: InterceptingCallInterface;
  done: boolean;
  metadata?: grpc.Metadata;
  message?: unknown;
}

/**
 * A stream reset by the transport rather than answered by the service: the
 * HTTP/2 session under it was closed. grpc-js reports it as INTERNAL
 * ("Received RST_STREAM with code 2 triggered by internal client error:
 * Session closed with error code 2"). Seen when a Node server's nghttp2
 * closes a session whose client reset more streams than its rapid-reset
 * limit allows (a burst of 1,000, then about 33 a second: CVE-2023-44487's
 * mitigation), which cancelled hedges do under a steady load. The call
 * never reached an answer, so for an idempotent method it is retried like
 * UNAVAILABLE.
 */
export function isTransportReset(status: grpc.StatusObject): boolean {
  return status.code === grpc.status.INTERNAL && /^Received RST_STREAM with code \d+ triggered by internal client error|Session closed with error code/.test(status.details);
}

export function hedgingInterceptor(opts: HedgingOptions): grpc.Interceptor {
  const services = new Set(opts.idempotentServices);
  const maxAttempts = opts.maxAttempts ?? 5;
  const minHedge = opts.minHedgeMs ?? 10;
  const maxHedge = opts.maxHedgeMs ?? 400;
  const factor = opts.hedgeFactor ?? 4;
  const budget = opts.budget ?? new RetryBudget();
  const mean = new MeanLatency();
  const hedgeDelay = () => Math.min(maxHedge, Math.max(minHedge, factor * (mean.value ?? maxHedge)));

  return (options, nextCall) => {
    const def = options.method_definition;
    // Client metrics ride on this interceptor rather than on one of their own: a second interceptor layer cost more per call than the metrics.
    const tally = meshObserver()?.clientCall?.(def.path, def.requestStream, def.responseStream);
    const service = def.path.split('/')[1];
    if (!services.has(service) || def.requestStream || def.responseStream) {
      if (!tally) return new grpc.InterceptingCall(nextCall(options));
      const started = performance.now();
      return new grpc.InterceptingCall(nextCall(options), {
        // A partial requester and listener: grpc-js passes everything else through unchanged.
        start: (md, _listener, next) =>
          next(md, {
            onReceiveStatus: (status, nextStatus) => {
              tally.ended(status.code, performance.now() - started);
              nextStatus(status);
            },
          }),
      });
    }
    const deadlineMs = options.deadline instanceof Date ? options.deadline.getTime() : Number(options.deadline ?? Infinity);
    const attempts: Attempt[] = [];
    let outer: grpc.InterceptingListener | undefined;
    let metadata: grpc.Metadata | undefined;
    let request: unknown;
    let haveRequest = false;
    let halfClosed = false;
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const t0 = performance.now();

    const inFlight = () => attempts.filter((a) => !a.done).length;
    const canAddAttempt = () => !finished && attempts.length < maxAttempts && Date.now() < deadlineMs && haveRequest && halfClosed;

    const finish = (winner: Attempt, status: grpc.StatusObject) => {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      for (const a of attempts) if (!a.done && a !== winner) a.call.cancelWithStatus(grpc.status.CANCELLED, 'another attempt answered first');
      const elapsed = performance.now() - t0;
      if (status.code === grpc.status.OK) mean.add(elapsed);
      tally?.ended(status.code, elapsed);
      if (winner.metadata) outer!.onReceiveMetadata(winner.metadata);
      if (winner.message !== undefined) outer!.onReceiveMessage(winner.message);
      outer!.onReceiveStatus(status);
    };

    const launch = (call: InterceptingCallInterface) => {
      const a: Attempt = { call, done: false };
      attempts.push(a);
      call.start(metadata!.clone(), {
        onReceiveMetadata: (md: grpc.Metadata) => (a.metadata = md),
        onReceiveMessage: (m: unknown) => (a.message = m),
        onReceiveStatus: (status: grpc.StatusObject) => {
          a.done = true;
          if (finished) return;
          if (status.code === grpc.status.UNAVAILABLE || isTransportReset(status)) {
            // Replace it at once if the budget allows; else wait for an attempt still running; else that is the answer.
            if (canAddAttempt() && budget.withdraw()) return void launchNext('retry');
            if (inFlight() > 0) return;
          }
          finish(a, status);
        },
      });
      return a;
    };

    const launchNext = (kind: 'hedge' | 'retry') => {
      meshObserver()?.extraAttempt?.(kind);
      const a = launch(nextCall(options));
      a.call.sendMessage(request);
      a.call.halfClose();
      armHedge();
    };

    const armHedge = () => {
      if (timer) clearTimeout(timer);
      const delay = hedgeDelay();
      if (Date.now() + delay >= deadlineMs) return;
      timer = setTimeout(() => {
        timer = undefined;
        if (canAddAttempt() && budget.withdraw()) launchNext('hedge');
      }, delay);
    };

    const first = nextCall(options);
    const requester = new grpc.RequesterBuilder()
      .withStart((md, listener) => {
        outer = listener;
        metadata = md;
        budget.deposit();
        launch(first);
      })
      .withSendMessage((message) => {
        request = message;
        haveRequest = true;
        first.sendMessage(message);
      })
      .withHalfClose(() => {
        halfClosed = true;
        first.halfClose();
        armHedge();
      })
      .withCancel(() => {
        if (finished) return;
        finished = true;
        tally?.ended(grpc.status.CANCELLED, performance.now() - t0);
        if (timer) clearTimeout(timer);
        for (const a of attempts) if (!a.done) a.call.cancelWithStatus(grpc.status.CANCELLED, 'cancelled by the caller');
        // The attempts' own statuses are dropped once finished: the caller hears of its cancel here, once.
        outer?.onReceiveStatus({ code: grpc.status.CANCELLED, details: 'Cancelled on client', metadata: new grpc.Metadata() });
      })
      .build();
    return new grpc.InterceptingCall(first, requester);
  };
}
