import type { ServiceError } from '@grpc/grpc-js';
import { status as grpcStatus } from '@grpc/grpc-js';
import { backendOf, sayHello } from './greeter-client';
import { componentLogger } from '../core/logger';
import { LatencyHistogram } from './load-histogram';
import { ScheduleClock, ScheduleTally } from './load-schedule';
import type { LoadReport, ScheduleFigures } from './load-figures';
import type { LoadOptions } from './load-options';
import { LoadSeconds } from './load-seconds';

type LoadPhase = 'warmup' | 'measuring' | 'draining' | 'done';

/** Dispatch later than this behind a call's intended start means the client cannot keep the schedule. */
export const BEHIND_THRESHOLD_MS = 100;
/** Calls started per timer wake-up at most, so a catch-up burst never starves the replies. */
const MAX_BURST = 500;

function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * One run of `mesh load`, open loop (`rate`) or closed loop (`concurrency`).
 *
 * Contracts:
 * - Open loop: call k starts at its intended time from the schedule alone
 *   (ScheduleClock), whether earlier calls ended or not, and its latency
 *   counts from that intended time, so a stall of every backend shows in
 *   full. If the process cannot start calls on time, it starts them late
 *   (in bursts) and reports how far behind it fell; calls still unstarted
 *   when the run's time is up are counted as `missed`, not dropped silently.
 * - Closed loop: `concurrency` workers, each starts its next call when the
 *   previous one ends (latency from the actual start, as today).
 * - A call belongs to the warm-up when its intended start is before the end
 *   of the warm-up: it shows in the per-second ticks, not in the report.
 * - `total` counts measured calls started; then no more start, the in-flight
 *   ones are awaited (each bounded by its deadline).
 * - An ok call that ended more than the deadline after its intended start is
 *   `late` (and still ok): the reply came, but later than a caller holding
 *   that deadline from when it wanted to call would have waited. Under
 *   overload these are most ok calls; counting them apart keeps `ok` from
 *   reading as "on time".
 */
export async function runLoadEngine(opts: LoadOptions): Promise<LoadReport> {
  const name = opts.name ?? 'load';
  const log = componentLogger('load');
  const warmupMs = opts.warmupMs ?? 0;
  const total = opts.total ?? Infinity;
  // Before the clock starts: the first histogram loads its module (~130 ms
  // of CPU), which would otherwise delay the first calls of the schedule.
  const hist = new LatencyHistogram();
  const origin = performance.now();
  const measureFrom = origin + warmupMs;
  const end = measureFrom + (opts.durationMs ?? Infinity);
  let ok = 0;
  let failed = 0;
  let late = 0;
  let measuredStarted = 0;
  let lastDone = measureFrom;
  const backends: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let logged = 0;

  const seconds = new LoadSeconds(origin, warmupMs, opts.onTick, opts.rate && new ScheduleTally(opts.rate, origin, warmupMs, end, total));
  seconds.start();

  const call = async (intended: number): Promise<void> => {
    const measured = intended >= measureFrom;
    if (measured) measuredStarted++;
    seconds.sent(performance.now());
    try {
      const reply = await sayHello(opts.client, name, opts.deadlineMs);
      const now = performance.now();
      const ms = now - intended;
      const isLate = ms > opts.deadlineMs;
      const be = backendOf(reply);
      seconds.ok(now, ms, be, isLate);
      if (measured) {
        ok++;
        if (isLate) late++;
        hist.record(ms);
        backends[be] = (backends[be] ?? 0) + 1;
        lastDone = Math.max(lastDone, now);
      }
    } catch (err) {
      const now = performance.now();
      const code = grpcStatus[(err as ServiceError).code ?? grpcStatus.UNKNOWN] ?? 'UNKNOWN';
      // The first few failures are logged whole (the report only counts codes); the rest are counted in one line at the end.
      if (logged++ < 5) log.warn({ event: 'load.call_failed', code: (err as ServiceError).code, details: (err as ServiceError).details ?? String(err) }, `call failed: ${String((err as Error).message ?? err).split('\n')[0]}`);
      seconds.failed(now, code);
      if (measured) {
        failed++;
        errors[code] = (errors[code] ?? 0) + 1;
        lastDone = Math.max(lastDone, now);
      }
    }
  };

  const stopped = (at: number) => opts.signal?.aborted === true || at >= end || measuredStarted >= total;
  let schedule: ScheduleFigures | undefined;
  log.info({ event: 'load.started', mode: opts.rate ? 'open' : 'closed', rate: opts.rate?.spec, concurrency: opts.rate ? undefined : opts.concurrency, warmupMs, durationMs: opts.durationMs, total: opts.total }, opts.rate ? `open-loop load at ${opts.rate.spec} calls/s` : `closed-loop load, ${opts.concurrency} in flight`);
  // Phases of the run, changed only here: warmup -> measuring -> draining (no
  // new calls, awaiting those in flight) -> done.
  let phase: LoadPhase = 'warmup';
  /** When the last call was started (the end of the schedule, or the first worker that stopped). */
  let stoppedAt = Infinity;
  const setPhase = (next: LoadPhase) => {
    if (next === phase) return;
    log.info({ event: 'load.phase', from: phase, to: next }, `load ${phase} -> ${next}`);
    phase = next;
  };
  const measuringTimer = setTimeout(() => setPhase('measuring'), warmupMs);

  if (opts.rate) {
    const clock = new ScheduleClock(opts.rate, origin, warmupMs);
    const lag = new LatencyHistogram();
    let behindLogged = false;
    const inflight = new Set<Promise<void>>();
    await new Promise<void>((resolve) => {
      const pump = () => {
        const now = performance.now();
        let burst = 0;
        while (clock.peek() <= now && burst < MAX_BURST) {
          const intended = clock.peek();
          // Past the end (plus the lateness still counted as on time), calls not yet started are missed.
          if (stopped(intended) || now >= end + BEHIND_THRESHOLD_MS) return resolve();
          clock.take();
          burst++;
          const behind = now - intended;
          if (intended >= measureFrom) lag.record(behind);
          if (behind > BEHIND_THRESHOLD_MS && !behindLogged) {
            behindLogged = true;
            log.warn({ event: 'load.behind_schedule', behindMs: round(behind, 1), rate: opts.rate!.spec }, `the client cannot keep ${opts.rate!.spec} calls/s: ${behind.toFixed(0)} ms behind`);
          }
          const p = call(intended);
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
        }
        if (opts.signal?.aborted || stopped(clock.peek()) || now >= end + BEHIND_THRESHOLD_MS) return resolve();
        setTimeout(pump, Math.max(0, clock.peek() - performance.now()));
      };
      opts.signal?.addEventListener('abort', () => resolve(), { once: true });
      pump();
    });
    stoppedAt = performance.now();
    setPhase('draining');
    // Intended starts before the end that never went out: the schedule was not kept.
    let missed = 0;
    // Where they fall, by intended start (they are the schedule's tail, from the oldest one never sent).
    const notSent = new Map<number, number>();
    // How far behind the schedule was when it gave up: the oldest intended start never sent.
    const backlogMs = clock.peek() < end ? Math.max(0, stoppedAt - clock.peek()) : 0;
    if (!opts.signal?.aborted && measuredStarted < total) {
      for (let t = clock.peek(); t < end && measuredStarted + missed < total && missed < 10_000_000; t = clock.peek()) {
        clock.take();
        if (t >= measureFrom) {
          missed++;
          const k = seconds.secondAt(t);
          notSent.set(k, (notSent.get(k) ?? 0) + 1);
        }
      }
    }
    opts.onNotSent?.([...notSent].map(([second, count]) => ({ second, count })));
    await Promise.all(inflight);
    const lagFig = lag.figures();
    schedule = {
      rate: opts.rate.spec,
      intended: measuredStarted + missed,
      sent: measuredStarted,
      missed,
      behindMaxMs: missed > 0 ? Math.max(lagFig.max, round(backlogMs)) : lagFig.max,
      behindP99Ms: lagFig.p99,
      kept: missed === 0 && lagFig.max <= BEHIND_THRESHOLD_MS,
    };
    lag.destroy();
    if (!schedule.kept) log.warn({ event: 'load.schedule_not_kept', ...schedule }, `schedule ${opts.rate.spec} not kept: up to ${lagFig.max} ms behind, ${missed} calls never sent`);
  } else {
    const worker = async () => {
      while (!stopped(performance.now())) await call(performance.now());
    stoppedAt = Math.min(stoppedAt, performance.now());
    };
    const workers = Promise.all(Array.from({ length: opts.concurrency }, worker));
    await workers;
    stoppedAt = Math.min(stoppedAt, performance.now());
  }
  clearTimeout(measuringTimer);
  if (logged > 5) log.warn({ event: 'load.call_failed_unlogged', count: logged - 5 }, `${logged - 5} more failed calls not logged one by one (the report counts them by code)`);
  setPhase('done');
  // The last partial second is not shown as a second of its own (it would
  // read as a drop in rate) unless calls were started through nearly all of
  // it (a run of whole seconds ends a hair before its last boundary); the
  // report counts every call. That second is shown even if the clock has
  // not passed its end yet (the last calls ended within it): no second
  // after it can have begun, and capping at the current second dropped the
  // last whole second of a 2 s run whenever its calls ended before 2.000 s.
  const started = Math.min(stoppedAt, performance.now()) - origin;
  seconds.stop(Math.floor(started / 1000) + (started % 1000 >= 900 ? 2 : 1));
  const durationS = Math.max(0.001, (Math.max(lastDone, Math.min(performance.now(), end)) - measureFrom) / 1000);
  const lat = hist.figures();
  hist.destroy();
  return {
    requests: ok + failed,
    ok,
    failed,
    rps: round((ok + failed) / durationS, 1),
    durationS: round(durationS),
    latencyMs: lat,
    backends,
    errors,
    mode: opts.rate ? 'open' : 'closed',
    ...(opts.rate ? {} : { concurrency: opts.concurrency }),
    warmupS: round(warmupMs / 1000),
    ...(schedule ? { schedule } : {}),
    scheduled: ok + failed + (schedule?.missed ?? 0),
    notSent: schedule?.missed ?? 0,
    late,
    deadlineMs: opts.deadlineMs,
  };
}
