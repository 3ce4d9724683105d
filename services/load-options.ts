import type { GreeterClient } from './greeter-client';
import type { LoadTick } from './load-figures';
import type { RateSchedule } from './load-schedule';

/** What one load run is asked to do; read by the engine, passed through by runLoad. */
export interface LoadOptions {
  client: GreeterClient;
  concurrency: number;
  /** Measured run time after the warm-up; Infinity with `total`. */
  durationMs: number;
  /** Open loop at this rate (schedule) instead of `concurrency` workers. */
  rate?: RateSchedule;
  /** Stop after this many measured calls. */
  total?: number;
  /** Load run before measuring, left out of the report. */
  warmupMs?: number;
  /** Deadline of each call, hedged attempts included. */
  deadlineMs: number;
  name?: string;
  /** Called once per second with that second's counts. */
  onTick?: (tick: LoadTick) => void;
  /**
   * Open loop: called once when the run ends, with the calls never sent per
   * second of their intended start (seconds with none left out). Not in the
   * ticks: those seconds were handed out before the run knew it would not
   * catch up.
   */
  onNotSent?: (perSecond: { second: number; count: number }[]) => void;
  /** Stop early (e.g. Ctrl-C); the report covers what ran. */
  signal?: AbortSignal;
}
