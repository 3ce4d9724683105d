import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import { prefixRange } from '../core/resumable-watch';
import { errorText } from '../core/etcd-errors';
import type { Logger } from '../core/logger';

/** Whether what the page shows is etcd's current state, as `/api/topology` says it (`registry`). */
export interface RegistryHealth {
  /** live: etcd answered the last probe; stale: it did not (stopped, partitioned, no quorum), so the page may be out of date. */
  state: 'live' | 'stale';
  /** While stale: Date.now() when etcd last answered (or when the dashboard started, if it never did); null while live. */
  staleSince: number | null;
  /** While stale: why the last probe failed. */
  error?: string;
}

export interface RegistryHealthOptions {
  /** One probe this often (ms). */
  intervalMs?: number;
  /** A probe unanswered this long (ms) counts as failed. */
  timeoutMs?: number;
}

/**
 * Tells whether etcd still answers, which a watch cannot: a watch stream to
 * a stopped or cut-off etcd stays open and silent, exactly like one over a
 * registry where nothing happens. So every `intervalMs` one cheap read is
 * made: a linearizable Range of at most one key of the registry (keys
 * only), which needs the quorum and only the read permission the dashboard
 * has anyway, with its own deadline. A probe that fails or is not answered
 * within `timeoutMs` makes the registry `stale` (with since when); the next
 * answer makes it `live` again; nothing else is needed to recover. Emits
 * `change` on each transition (logged: warn when stale, info when live).
 * No event after close(); close() is idempotent.
 */
export class DashboardRegistryHealth extends EventEmitter<{ change: [health: RegistryHealth] }> {
  private health: RegistryHealth = { state: 'live', staleSince: null };
  private lastAnswerAt = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private probing = false;
  private closed = false;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;

  constructor(
    private readonly client: Etcd3,
    private readonly prefix: string,
    private readonly log: Logger,
    opts: RegistryHealthOptions = {},
  ) {
    super();
    this.intervalMs = opts.intervalMs ?? 1_000;
    this.timeoutMs = opts.timeoutMs ?? 2_000;
  }

  get current(): RegistryHealth {
    return this.health;
  }

  start(): this {
    if (this.timer || this.closed) return this;
    this.timer = setInterval(() => void this.probe(), this.intervalMs);
    void this.probe();
    return this;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.removeAllListeners();
  }

  private async probe(): Promise<void> {
    if (this.probing || this.closed) return;
    this.probing = true;
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      const r = prefixRange(this.prefix);
      // The deadline bounds the gRPC call (and etcd3's retries of it, which share it); the timer bounds anything before it (authentication).
      const call = this.client.kv.range({ key: r.start, range_end: r.end, limit: 1, keys_only: true }, { deadline: started + this.timeoutMs });
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs + 100);
      });
      call.catch(() => undefined);
      await Promise.race([call, late]);
      this.lastAnswerAt = Date.now();
      this.set({ state: 'live', staleSince: null }, Date.now() - started);
    } catch (err) {
      const e = errorText(err);
      this.set({ state: 'stale', staleSince: this.lastAnswerAt, error: /deadline/i.test(e) ? `no answer within ${this.timeoutMs} ms` : e }, Date.now() - started);
    } finally {
      clearTimeout(timer);
      this.probing = false;
    }
  }

  private set(next: RegistryHealth, probeMs: number): void {
    if (this.closed) return;
    const prev = this.health;
    if (prev.state === next.state && prev.error === next.error) return;
    this.health = next;
    if (next.state === 'stale' && prev.state === 'live') {
      this.log.warn({ event: 'dashboard.registry_stale', since: next.staleSince, err: next.error, probeMs }, `etcd does not answer (${next.error}): the page shows the registry as of ${new Date(next.staleSince!).toISOString()}`);
    } else if (next.state === 'live') {
      this.log.info({ event: 'dashboard.registry_live', staleMs: prev.staleSince === null ? 0 : Date.now() - prev.staleSince, probeMs }, 'etcd answers again: the registry is live');
    }
    if (prev.state !== next.state || next.state === 'stale') this.emit('change', next);
  }
}
