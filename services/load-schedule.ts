/** A `--rate` value that is not a rate; the CLI turns it into one line on stderr and exit code 2. */
export class BadRateError extends Error {}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/** Highest rate `--rate` takes: beyond it one process cannot even time its calls. */
export const MAX_RATE = 100_000;

/**
 * An open-loop rate: constant (`--rate 400`) or a step load as ghz's
 * (`--rate 100:2000:100/5s`: start at 100 calls/s, add 100 every 5 s, hold
 * at 2000). A step may be negative (a falling load), then `end` < `start`.
 */
export interface RateSchedule {
  /** calls/s at t = 0. */
  start: number;
  /** calls/s held once reached (equal to start for a constant rate). */
  end: number;
  /** calls/s added every `intervalMs` (0 for a constant rate). */
  step: number;
  intervalMs: number;
  /** The flag's text, echoed in the summary. */
  spec: string;
}

function rateNumber(text: string, what: string, whole: string): number {
  if (!/^\d+(\.\d+)?$/.test(text)) throw new BadRateError(`${JSON.stringify(whole)}: ${what} ${JSON.stringify(text)} is not a number of calls per second`);
  const n = Number(text);
  if (!(n > 0) || n > MAX_RATE) throw new BadRateError(`${JSON.stringify(whole)}: ${what} must be in (0, ${MAX_RATE}] calls/s`);
  return n;
}

/** Parser of `--rate`: `R` or `START:END:STEP/INTERVAL`. Throws BadRateError. */
export function parseRate(value: string): RateSchedule {
  const v = value.trim();
  if (!v.includes(':')) {
    const r = rateNumber(v, 'rate', value);
    return { start: r, end: r, step: 0, intervalMs: 1000, spec: v };
  }
  const m = /^([^:]*):([^:]*):(-?)([^:/]*)\/([^:/]+)$/.exec(v);
  if (!m) throw new BadRateError(`${JSON.stringify(value)} is not a rate: R, or START:END:STEP/INTERVAL (e.g. 100:2000:100/5s)`);
  const start = rateNumber(m[1], 'start', value);
  const end = rateNumber(m[2], 'end', value);
  const stepAbs = rateNumber(m[4], 'step', value);
  const step = m[3] === '-' ? -stepAbs : stepAbs;
  const d = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(m[5]);
  const intervalMs = d ? Number(d[1]) * UNIT_MS[d[2]] : NaN;
  if (!(intervalMs >= 1)) throw new BadRateError(`${JSON.stringify(value)}: interval ${JSON.stringify(m[5])} is not a duration of at least 1ms (e.g. 5s)`);
  if (start !== end && Math.sign(end - start) !== Math.sign(step)) throw new BadRateError(`${JSON.stringify(value)}: a step of ${step} never goes from ${start} to ${end}`);
  return { start, end, step: start === end ? 0 : step, intervalMs, spec: v };
}

/** The rate (calls/s) the schedule asks for `elapsedMs` after measuring began (warm-up runs at the start rate). */
export function rateAt(s: RateSchedule, elapsedMs: number): number {
  if (s.step === 0 || elapsedMs <= 0) return s.start;
  const r = s.start + s.step * Math.floor(elapsedMs / s.intervalMs);
  return s.step > 0 ? Math.min(s.end, r) : Math.max(s.end, r);
}

/**
 * Intended start times of an open-loop schedule, in ms on the
 * performance.now() clock. They follow from the schedule alone, never from
 * when earlier calls finished: that is what keeps a stall of every backend
 * from hiding itself (coordinated omission).
 */
export class ScheduleClock {
  private next: number;

  constructor(
    private readonly schedule: RateSchedule,
    /** When the warm-up (if any) starts. */
    readonly origin: number,
    /** Warm-up length; the schedule's steps count from its end. */
    private readonly warmupMs: number,
  ) {
    this.next = origin;
  }

  /** Intended start of the next call (not consumed). */
  peek(): number {
    return this.next;
  }

  /** Consume the next intended start and return it. */
  take(): number {
    const t = this.next;
    this.next = t + 1000 / rateAt(this.schedule, t - this.origin - this.warmupMs);
    return t;
  }
}

/**
 * Counts the calls a schedule asks for, second by second, from the schedule
 * alone (its own ScheduleClock): the "asked" line of the report, which must
 * not depend on what the client managed to send. Bounded as the run is: no
 * intended start at or after `end`, and at most `total` measured ones.
 */
export class ScheduleTally {
  private readonly clock: ScheduleClock;
  private measured = 0;

  constructor(
    schedule: RateSchedule,
    origin: number,
    private readonly warmupMs: number,
    private readonly end: number,
    private readonly total = Infinity,
  ) {
    this.clock = new ScheduleClock(schedule, origin, warmupMs);
  }

  /** Intended starts from where the last call left off up to (not including) `t`. */
  countUntil(t: number): number {
    const measureFrom = this.clock.origin + this.warmupMs;
    let n = 0;
    for (let next = this.clock.peek(); next < t && next < this.end && (next < measureFrom || this.measured < this.total); next = this.clock.peek()) {
      if (next >= measureFrom) this.measured++;
      this.clock.take();
      n++;
    }
    return n;
  }
}
