import * as http from 'node:http';
import type { EtcdMember } from '../demo/etcd-local';

/**
 * etcd's own count of the gRPC messages it received (go-grpc-prometheus's
 * `grpc_server_msg_received_total` on each member's /metrics, summed over
 * every member and method): a unary request is one message, each lease
 * keepalive on a stream is one, a watch create is one. That is "etcd
 * requests" in the figures, read from etcd rather than counted by us.
 */
export async function etcdMessagesReceived(members: EtcdMember[], timeoutMs = 400): Promise<number | undefined> {
  const counts = await Promise.all(
    members.map(async (m) => {
      const body = await getText(`${m.metricsUrl ?? m.clientUrl}/metrics`, timeoutMs);
      if (body === undefined) return undefined;
      let sum = 0;
      for (const line of body.split('\n')) {
        if (!line.startsWith('grpc_server_msg_received_total{')) continue;
        sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return sum;
    }),
  );
  // A member that did not answer makes the sample unusable (a stopped etcd, or one still waking up).
  if (counts.some((c) => c === undefined)) return undefined;
  return counts.reduce<number>((a, c) => a + (c ?? 0), 0);
}

/**
 * GET over a fresh connection, the whole exchange bounded by `timeoutMs`;
 * undefined on any failure. Not fetch(): in the herd test a fetch to a
 * member resumed from SIGSTOP (its pooled keep-alive connection stalled
 * mid-exchange) hung past its abort signal, and the sampler with it.
 */
export function getText(url: string, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return done(undefined);
      }
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => done(body));
      res.on('error', () => done(undefined));
    });
    const timer = setTimeout(() => done(undefined), timeoutMs);
    req.on('error', () => done(undefined));
    function done(v: string | undefined): void {
      clearTimeout(timer);
      req.destroy();
      resolve(v);
    }
  });
}

export interface RateSample {
  /** epoch ms */
  t: number;
  /** messages received by all members, cumulative; undefined while a member did not answer. */
  total: number | undefined;
}

/**
 * Samples etcd's received-message count every `everyMs` until stopped.
 * `rates(from, to)` gives messages/s between consecutive answered samples.
 */
export class EtcdRateSampler {
  readonly samples: RateSample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly members: EtcdMember[],
    private readonly everyMs = 200,
  ) {}

  start(): this {
    const tick = async () => {
      if (this.stopped) return;
      const t = performance.timeOrigin + performance.now();
      // A member busy with a recovery answers /metrics late; a short timeout would call it stopped.
      const total = await etcdMessagesReceived(this.members, 1_500);
      this.samples.push({ t, total });
      if (!this.stopped) this.timer = setTimeout(() => void tick(), Math.max(0, t + this.everyMs - (performance.timeOrigin + performance.now())));
    };
    void tick();
    return this;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Last sample before `t` in which every member answered. */
  lastAnsweredBefore(t: number): RateSample | undefined {
    return this.samples.filter((s) => s.t < t && s.total !== undefined).pop();
  }

  /** First sample at or after `t` in which every member answered. */
  firstAnsweredAfter(t: number): RateSample | undefined {
    return this.samples.find((s) => s.t >= t && s.total !== undefined);
  }

  /** Rates (messages/s) between consecutive answered samples (at most 2 s apart) whose later end lies in [from, to]. */
  rates(from: number, to: number): Array<{ t: number; perS: number }> {
    const out: Array<{ t: number; perS: number }> = [];
    let prev: RateSample | undefined;
    for (const s of this.samples) {
      if (s.total === undefined) continue;
      // A gap (etcd stopped) would average a burst over the silence before it.
      if (prev && s.t >= from && s.t <= to && s.t - prev.t <= 2_000) out.push({ t: s.t, perS: ((s.total - prev.total!) * 1000) / (s.t - prev.t) });
      prev = s;
    }
    return out;
  }
}
