import type { Etcd3 } from 'etcd3';
import { Election } from '../coordination/election';
import { ProgressWatch, setProgress, type ProgressUpdate } from '../coordination/progress';
import { componentLogger, type Logger } from '../core/logger';

/**
 * The greeters' shared one-off job (seed sections 4 and 7): every greeter
 * campaigns in election NAME with its address; the leader "builds the
 * index" in steps, reporting progress in `progress/NAME`, and writes the
 * result to `index/NAME`; followers watch the progress and load the result
 * when it reaches 100. A new leader resumes from the last reported step, so
 * killing the leader mid-build loses no finished work.
 *
 * Log events (the demo narrates them): `index.leader`, `index.progress`
 * {percent}, `index.loaded` {builtBy}, `index.leadership_lost`.
 */
export interface IndexJobOptions {
  name: string;
  /** This greeter's address, the campaign value. */
  addr: string;
  /** Session TTL (s): how fast a dead leader is replaced. */
  ttlSeconds: number;
  /** Time per 10% step, ms (default 600). */
  stepMs?: number;
}

export function indexResultKey(name: string): string {
  return `index/${name}`;
}

export class IndexJob {
  private readonly log: Logger;
  private election: Election | undefined;
  private watch: ProgressWatch | undefined;
  private closed = false;
  private loaded = false;
  private readonly abort = new AbortController();

  constructor(
    private readonly client: Etcd3,
    private readonly opts: IndexJobOptions,
  ) {
    this.log = componentLogger('index-job', { election: opts.name, addr: opts.addr });
  }

  start(): void {
    this.watch = new ProgressWatch(this.client, this.opts.name, { log: this.log });
    this.watch.on('progress', (u: ProgressUpdate) =>
      this.onProgress(u).catch((err) => this.log.warn({ event: 'index.load_failed', err: String(err) }, 'could not load the index; will try on the next progress event')),
    );
    this.watch.start();
    void this.campaignLoop().catch((err) => this.log.error({ event: "index.stopped", err: String(err) }, "index job stopped"));
  }

  private async campaignLoop(): Promise<void> {
    while (!this.closed) {
      const election = new Election(this.client, { name: this.opts.name, ttlSeconds: this.opts.ttlSeconds, log: this.log });
      this.election = election;
      try {
        await election.campaign(this.opts.addr, { signal: this.abort.signal });
      } catch (err) {
        if (this.closed) return;
        this.log.warn({ event: 'index.campaign_failed', err: String(err) }, 'campaign failed; campaigning again');
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      this.log.info({ event: 'index.leader' }, `${this.opts.addr} leads ${this.opts.name}`);
      // Settles when the lease goes, or when close() resigns (state RESIGNED).
      const over = new Promise<void>((resolve) => {
        election.once('lost', () => resolve());
        election.on('state', (next: string) => next === 'RESIGNED' && resolve());
      });
      try {
        await Promise.race([this.build(election), over]);
      } catch (err) {
        // etcd unreachable mid-build: give up leadership so a healthy peer (or we, later) resumes.
        this.log.warn({ event: 'index.build_failed', err: String(err) }, 'index build step failed; resigning and campaigning again');
        await election.resign();
      }
      await over;
      if (this.closed) return;
      this.log.warn({ event: 'index.leadership_lost' }, 'leadership lost; stopped building; campaigning again');
    }
  }

  /** Build from the last reported step up to 100, while we lead. */
  private async build(election: Election): Promise<void> {
    const stored = await this.client.get(`progress/${this.opts.name}`).string();
    let percent = stored && /^\d+$/.test(stored) ? Number(stored) : 0;
    if (percent >= 100) return;
    while (percent < 100 && election.state === 'LEADER' && !this.closed) {
      await new Promise((r) => setTimeout(r, this.opts.stepMs ?? 600));
      if (election.state !== 'LEADER' || this.closed) return;
      percent = Math.min(100, percent + 10);
      if (percent === 100) {
        await this.client.put(indexResultKey(this.opts.name)).value(JSON.stringify({ builtBy: this.opts.addr, entries: 1000, at: new Date().toISOString() }));
      }
      await setProgress(this.client, this.opts.name, percent);
      this.log.info({ event: 'index.progress', percent }, `index ${percent}%`);
    }
  }

  private async onProgress(u: ProgressUpdate): Promise<void> {
    if (u.percent < 100 || this.loaded || this.closed) return;
    const raw = await this.client.get(indexResultKey(this.opts.name)).string();
    if (!raw || this.closed) return;
    let builtBy: string;
    try {
      builtBy = String((JSON.parse(raw) as { builtBy?: unknown }).builtBy);
    } catch {
      this.log.warn({ event: 'index.bad_result', key: indexResultKey(this.opts.name) }, 'index result is not JSON; not loaded');
      return;
    }
    this.loaded = true;
    this.log.info({ event: 'index.loaded', builtBy }, `index loaded (built by ${builtBy})`);
  }

  /** Resign (the next greeter leads at once) and stop watching. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    this.watch?.close();
    await this.election?.resign();
  }
}
