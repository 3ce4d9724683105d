import { performance } from 'node:perf_hooks';
import { Command, Option } from 'commander';
import type { Etcd3 } from 'etcd3';
import { addEtcdOptions, connectEtcd, CommandFailure, UsageError, type EtcdFlags } from './common';
import { intIn, parseCoordinationName, parsePositiveDuration, parseTtl } from './parse';
import { SignalRelay } from './signal-relay';
import { runCmd } from './queue-cmd-handler';
import { StdoutSink } from './queue-stdout-sink';
import { EXIT_READER_GONE, type Handled } from './queue-handled';
import { argBytes } from './argv-bytes';
import { componentLogger, type Logger } from '../core/logger';
import { Backoff } from '../core/backoff';
import { errorText } from '../core/etcd-errors';
import { ClaimLostError, EtcdQueue, type Delivery, type QueueConsumer } from '../coordination/queue';
import { Session, SessionLostError } from '../coordination/lock-session';
import { sleep } from '../coordination/lock-wait';

interface PopFlags extends EtcdFlags {
  wait?: boolean;
  timeout?: number;
  ttl: number;
  count: number;
}


export function queueCommand(): Command {
  const queue = new Command('queue').summary('FIFO work queue: push, pop (each item to exactly one consumer)').description('a FIFO work queue in etcd: each item goes to exactly one consumer; items of a consumer that dies go back to the queue');
  queue.addCommand(pushCommand());
  queue.addCommand(popCommand());
  // `mesh queue` alone is a usage error like any other: one line, exit 2.
  queue.action(() => queue.error('mesh: queue needs a subcommand: push or pop', { exitCode: 2, code: 'mesh.usage' }));
  return queue;
}

function pushCommand(): Command {
  const cmd = new Command('push')
    .description('append VALUE to queue NAME (FIFO by etcd create revision); VALUE is stored as the exact bytes given, and must not contain a line break')
    .argument('<name>', 'queue name (keys NAME/items/..., NAME/claims/...)', parseCoordinationName)
    .argument('<value>', 'the item')
    .addHelpText('after', '\nExample:\n  mesh queue push jobs \'{"video": 42}\'');
  addEtcdOptions(cmd);
  return cmd.action(async (name: string, value: string, flags: EtcdFlags) => {
    const bytes = argBytes(value);
    // pop's stdout mode prints one item per line; a line break would split
    // one item into two for every line-reading consumer. Refused up front
    // rather than encoded, so what pop prints is always what was pushed.
    if (bytes.includes(0x0a) || bytes.includes(0x0d)) throw new UsageError('queue push: VALUE contains a line break; items are one line each (pop prints one per line)');
    const etcd = await connectEtcd(flags);
    try {
      const item = await new EtcdQueue(etcd, { name, log: componentLogger('queue', { queue: name }) }).push(bytes);
      componentLogger('cli', { command: 'queue push' }).info({ event: 'queue.pushed', key: item.key, revision: item.createRevision }, 'pushed');
    } finally {
      etcd.close();
    }
  });
}

function popCommand(): Command {
  const cmd = new Command('pop')
    .description(
      'take the oldest item of queue NAME. With -- CMD: run CMD once per item (the item on its stdin and in MESH_ITEM); ' +
        "the item is acknowledged (deleted) only when CMD exits 0; on a non-zero exit it goes back to the head of the queue at once and pop exits with CMD's code. " +
        'Without CMD: print the item (one line); it is acknowledged once the reader has taken it out of the pipe, so at most one item is in flight; ' +
        `if the reader goes away first, the item goes back to the head of the queue and pop exits ${EXIT_READER_GONE}. ` +
        'Exit 1 if nothing was popped (queue empty without --wait, or empty for --timeout).',
    )
    .argument('<name>', 'queue name', parseCoordinationName)
    .argument('[cmd...]', 'command and arguments, after --: run once per item')
    .option('--wait', 'wait for an item if the queue is empty')
    .addOption(new Option('--timeout <duration>', 'with --wait (implied): give up after this long without an item, exit 1 if nothing was popped').argParser(parsePositiveDuration))
    .addOption(new Option('--count <n>', 'pop up to n items (0: no limit, until empty/timeout/signal)').default(1).argParser(intIn(0, 1_000_000_000)))
    .addOption(new Option('--ttl <seconds>', 'lease TTL: how soon items taken by a consumer that died go back to the queue').default(10).argParser(parseTtl))
    .addHelpText(
      'after',
      '\nExamples:\n  mesh queue pop jobs --wait --count 0 -- ./handle.sh     # a worker: nothing is lost if handle.sh fails\n  mesh queue pop jobs\n  mesh queue pop jobs --wait --timeout 30s\n\n' +
        'An item handled by a consumer whose session was lost (etcd stalled longer than --ttl) may be delivered twice (at-least-once).',
    );
  addEtcdOptions(cmd);
  return cmd.action(async (name: string, argv: string[], flags: PopFlags) => {
    const log = componentLogger('cli', { command: 'queue pop', queue: name });
    const etcd = await connectEtcd(flags);
    const signals = new SignalRelay(log);
    const out = argv.length === 0 ? StdoutSink.open(log) : undefined;
    const run = new PopRun(etcd, new EtcdQueue(etcd, { name, log: componentLogger('queue', { queue: name }) }), flags, signals, log);
    let outcome: PopOutcome;
    try {
      await run.start();
      outcome = argv.length > 0 ? await run.loop((d) => runCmd(d, argv, signals, log)) : await run.loop((d) => out!.deliver(d, signals));
    } finally {
      signals.dispose();
      out?.close();
      // Revoking our lease drops any claim we still hold: the item is back at once.
      await run.close();
      etcd.close();
    }
    if (outcome.code !== undefined) process.exit(outcome.code);
    if (outcome.popped === 0 && !signals.received) {
      const wait = Boolean(flags.wait) || flags.timeout !== undefined;
      throw new CommandFailure(wait ? `queue ${name} stayed empty for ${flags.timeout} ms` : `queue ${name} is empty`, 1);
    }
    process.exit(outcome.popped === 0 ? 1 : 0);
  });
}


interface PopOutcome {
  popped: number;
  /** Exit with this code (CMD's failure, reader gone), whatever was popped. */
  code?: number;
}

/** etcd errors a consumer rides out: the cluster is slow, unreachable, or lost our lease. */
function transient(err: unknown): boolean {
  if (err instanceof ClaimLostError || err instanceof SessionLostError) return true;
  if (!(err instanceof Error)) return false;
  if (/GRPC(Unavailable|DeadlineExceeded|Cancelled|Internal|Unknown|ResourceExhasted|Aborted)Error|EtcdLeaseInvalidError|ClientRuntimeError|BrokenCircuitError|TaskCancelledError/.test(err.name)) return true;
  // Raw grpc-js errors (not cast by etcd3): status codes CANCELLED, UNKNOWN,
  // DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE.
  const code = (err as { code?: unknown }).code;
  return [1, 2, 4, 8, 10, 13, 14].includes(code as number) || /^(1 CANCELLED|2 UNKNOWN|4 DEADLINE_EXCEEDED|8 RESOURCE_EXHAUSTED|10 ABORTED|13 INTERNAL|14 UNAVAILABLE)\b/.test(err.message);
}

/**
 * The pop loop, with the consumer's session as its one piece of state.
 * A session lost to an etcd stall (no keepalive confirmed for --ttl) is not
 * the end: a new one is opened as soon as etcd answers, and popping carries
 * on. Claims of the old session come back to the queue when its lease
 * expires, so an item in hand when the session was lost may be delivered
 * again (at-least-once).
 */
class PopRun {
  private session: Session | undefined;
  private consumer: QueueConsumer | undefined;
  private state: 'STARTING' | 'ACTIVE' | 'RECONNECTING' | 'CLOSED' = 'STARTING';
  private readonly wait: boolean;

  constructor(
    private readonly etcd: Etcd3,
    private readonly queue: EtcdQueue,
    private readonly flags: PopFlags,
    private readonly signals: SignalRelay,
    private readonly log: Logger,
  ) {
    this.wait = Boolean(flags.wait) || flags.timeout !== undefined;
  }

  private setState(next: PopRun['state'], fields: Record<string, unknown> = {}): void {
    if (next === this.state) return;
    this.log.info({ event: 'queue.consumer_state', from: this.state, to: next, ...fields }, `consumer ${this.state} -> ${next}`);
    this.state = next;
  }

  /** The first session: failing to get one is an error (exit 1), not something to wait out. */
  async start(): Promise<void> {
    this.use(await Session.open(this.etcd, this.flags.ttl, componentLogger('queue', { queue: this.queue.name })));
  }

  private use(s: Session): void {
    this.session = s;
    this.consumer = this.queue.consumer(s);
    this.setState('ACTIVE', { lease: s.leaseHex });
  }

  /** Open a new session after a loss; waits for etcd as long as it takes, or until a signal. */
  private async renew(reason: string): Promise<boolean> {
    const old = this.session;
    this.setState('RECONNECTING', { lease: old?.leaseHex, reason });
    await old?.close();
    const backoff = new Backoff(100, 2_000);
    for (;;) {
      if (this.signals.received) return false;
      try {
        this.use(await Session.open(this.etcd, this.flags.ttl, componentLogger('queue', { queue: this.queue.name })));
        return true;
      } catch (err) {
        this.log.warn({ event: 'queue.session_open_failed', err: errorText(err) }, 'could not open a new session; retrying');
      }
      try {
        await sleep(backoff.next(), this.signals.abortSignal);
      } catch {
        return false;
      }
    }
  }

  async loop(handle: (d: Delivery) => Promise<Handled>): Promise<PopOutcome> {
    let popped = 0;
    const backoff = new Backoff(100, 2_000);
    // --timeout bounds the wait for each next item (monotonic), across retries.
    const timeout = this.flags.timeout ?? Infinity;
    let deadline = performance.now() + timeout;
    while (this.flags.count === 0 || popped < this.flags.count) {
      if (this.signals.received) break;
      if (!this.session!.alive && !(await this.renew('session lost'))) break;
      let d: Delivery | undefined;
      try {
        const left = deadline - performance.now();
        if (this.wait && left <= 0) break;
        d = this.wait ? await this.consumer!.pop({ timeoutMs: left === Infinity ? undefined : left, signal: this.signals.abortSignal }) : await this.consumer!.tryPop();
        backoff.reset();
      } catch (err) {
        if (this.signals.received) break;
        if (!transient(err)) throw err;
        this.log.warn({ event: 'queue.pop_failed', err: errorText(err), sessionAlive: this.session!.alive }, 'etcd did not answer the pop; trying again');
        if (!this.session!.alive) continue;
        try {
          await sleep(backoff.next(), this.signals.abortSignal);
        } catch {
          break;
        }
        continue;
      }
      if (!d) break;
      if (this.signals.received) {
        await this.giveBack(d, 'signal before the item was handled');
        break;
      }
      const h = await handle(d);
      if (!h.ack) {
        await this.giveBack(d, h.why);
        if (h.code === undefined) break;
        return { popped, code: h.code };
      }
      popped++;
      await this.acknowledge(d);
      deadline = performance.now() + timeout;
    }
    return { popped };
  }

  /**
   * Ack, retried through a short etcd stall (a late ack still lands if
   * nobody took the item meanwhile). Failing that, the item was handled but
   * is delivered again: at-least-once, logged, not fatal.
   */
  private async acknowledge(d: Delivery): Promise<void> {
    const backoff = new Backoff(100, 2_000);
    for (let attempt = 1; ; attempt++) {
      try {
        await d.ack();
        this.log.debug({ event: 'queue.acked', key: d.key }, 'handled and acknowledged');
        return;
      } catch (err) {
        const again = transient(err) && !(err instanceof ClaimLostError) && attempt < 5;
        this.log.warn({ event: 'queue.ack_failed', key: d.key, attempt, err: errorText(err) }, again ? 'ack failed; trying again' : 'item handled but not acknowledged: it will be delivered again');
        if (!again) return;
        await sleep(backoff.next());
      }
    }
  }

  /** nack: the item is available again at once, at the head. If etcd cannot be told, it comes back when our lease expires. */
  private async giveBack(d: Delivery, why: string): Promise<void> {
    try {
      await d.nack();
      this.log.info({ event: 'queue.given_back', key: d.key, why }, `item given back to the head of the queue: ${why}`);
    } catch (err) {
      this.log.warn({ event: 'queue.give_back_failed', key: d.key, why, err: errorText(err) }, `could not give the item back; it returns when lease expires (within ${this.flags.ttl}s)`);
    }
  }

  async close(): Promise<void> {
    if (this.state === 'CLOSED') return;
    this.setState('CLOSED');
    await this.session?.close();
  }
}
