import { spawn, type ChildProcess } from 'node:child_process';
import { fstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, Option } from 'commander';
import type { Etcd3 } from 'etcd3';
import { addEtcdOptions, connectEtcd, CommandFailure, UsageError, type EtcdFlags } from './common';
import { intIn, parseCoordinationName, parsePositiveDuration, parseTtl } from './parse';
import { startCommand } from './command-runner';
import { SignalRelay } from './signal-relay';
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

/** Exit code when the reader of stdout went away (EPIPE): 128 + SIGPIPE, as a shell reports `yes | head`. */
export const EXIT_READER_GONE = 141;
/** Exit code when stdout mode meets an item holding a line break (pushed by other means): EX_DATAERR. */
export const EXIT_MULTILINE_ITEM = 65;

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

/** How one delivered item was handled: acknowledge it, or give it back and stop (with `code`, else as after a signal). */
type Handled = { ack: true } | { ack: false; code?: number; why: string };

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

/**
 * Runs CMD with the item on its stdin and in MESH_ITEM, through startCommand
 * (its own process group, a watchdog that stops it if mesh is killed).
 * startCommand gives CMD mesh's own stdin, so a small shell puts the item
 * there: it reads the item from a private file into MESH_ITEM (byte for
 * byte; an environment cannot hold NUL bytes), makes the file its stdin,
 * removes it, and execs CMD, which keeps the pid and the exit code.
 */
const CMD_WRAPPER = 'f=$MESH_ITEM_FILE && unset MESH_ITEM_FILE && MESH_ITEM=$(cat -- "$f"; echo x) && MESH_ITEM=${MESH_ITEM%x} && export MESH_ITEM && exec <"$f" && rm -f -- "$f" && exec "$@"';

async function runCmd(d: Delivery, argv: string[], signals: SignalRelay, log: Logger): Promise<Handled> {
  const dir = mkdtempSync(path.join(tmpdir(), 'mesh-item-'));
  try {
    const file = path.join(dir, 'item');
    writeFileSync(file, d.bytes, { mode: 0o600 });
    // `mesh` is the shell's $0: its own errors read `mesh: 1: exec: CMD: not found` (exit 127).
    const child = startCommand(['sh', '-c', CMD_WRAPPER, 'mesh', ...argv], { MESH_ITEM_FILE: file, MESH_ITEM_KEY: d.key }, log.child({ item: d.key }));
    signals.forwardTo(child);
    const code = await child.exited;
    signals.forwardTo(undefined);
    if (code === 0) return { ack: true };
    return { ack: false, code, why: `CMD exited with ${code}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Stdout mode. Writing into a pipe only puts the item in the kernel's pipe
 * buffer (64 KiB), which a reader that dies never reads: acknowledging on
 * write would lose a pipe-full. So after writing, we wait until the reader
 * has taken every byte out (FIONREAD on a pipe, SIOCOUTQ on a socket, asked
 * by a small perl helper that shares our stdout; Node has no ioctl), or until
 * the reader is gone (POLLERR/POLLHUP): only then is the item acknowledged,
 * or given back. A file or terminal takes the item on write.
 */
class StdoutSink {
  private failed: NodeJS.ErrnoException | undefined;
  private readonly onError = (err: NodeJS.ErrnoException) => (this.failed = err);
  private readonly saved: ((...args: unknown[]) => void)[];

  private constructor(
    private readonly drain: DrainProbe | undefined,
    private readonly log: Logger,
  ) {
    // main.ts exits 0 on EPIPE; here EPIPE means "give the item back first".
    this.saved = process.stdout.listeners('error') as ((...args: unknown[]) => void)[];
    process.stdout.removeAllListeners('error');
    process.stdout.on('error', this.onError);
  }

  static open(log: Logger): StdoutSink {
    let kind: 'pipe' | 'socket' | undefined;
    try {
      const st = fstatSync(1);
      kind = st.isFIFO() ? 'pipe' : st.isSocket() ? 'socket' : undefined;
    } catch {
      kind = undefined;
    }
    return new StdoutSink(kind ? DrainProbe.start(kind, log) : undefined, log);
  }

  async deliver(d: Delivery, signals: SignalRelay): Promise<Handled> {
    if (d.bytes.includes(0x0a) || d.bytes.includes(0x0d)) {
      process.stderr.write(`mesh: item ${d.key} contains a line break; stdout mode prints one item per line: pop it with -- CMD\n`);
      return { ack: false, code: EXIT_MULTILINE_ITEM, why: 'item contains a line break' };
    }
    const err = this.failed ?? (await new Promise<Error | null | undefined>((resolve) => process.stdout.write(Buffer.concat([d.bytes, Buffer.from('\n')]), resolve)));
    if (err) return this.gone(err);
    if (!this.drain) return { ack: true };
    const got = await Promise.race([this.drain.wait(), signals.next().then(() => 'signal' as const)]);
    if (got === 'drained') return { ack: true };
    if (got === 'signal') return { ack: false, why: 'signal before the reader had read the item' };
    return this.gone(new Error('reader closed the pipe without reading the item'));
  }

  private gone(err: Error): Handled {
    this.log.warn({ event: 'queue.reader_gone', err: errorText(err) }, 'the reader of stdout went away: giving the item back');
    return { ack: false, code: EXIT_READER_GONE, why: 'reader of stdout went away' };
  }

  close(): void {
    this.drain?.close();
    process.stdout.off('error', this.onError);
    for (const l of this.saved) process.stdout.on('error', l);
  }
}

const PROBE = `
use strict; use IO::Handle; use IO::Poll qw(POLLERR POLLHUP);
my $req = $ARGV[0] + 0;
open(my $ans, '>&=', 3) or die "fd 3: $!"; $ans->autoflush(1);
my $poll = IO::Poll->new; $poll->mask(\\*STDOUT => POLLERR | POLLHUP);
while (defined(my $line = <STDIN>)) {
  my $nap = 0.001;
  for (;;) {
    my $buf = pack('i', 0);
    if (!ioctl(STDOUT, $req, $buf)) { print $ans "error $!\\n"; last; }
    if (unpack('i', $buf) == 0) { print $ans "drained\\n"; last; }
    $poll->poll($nap);
    if ($poll->events(\\*STDOUT) & (POLLERR | POLLHUP)) {
      # The reader left. If it read the item first (the pipe is empty: a
      # reader that takes a line and exits), the item was taken; otherwise not.
      my $left = pack('i', 0);
      print $ans ((ioctl(STDOUT, $req, $left) && unpack('i', $left) == 0) ? "drained\\n" : "gone\\n");
      last;
    }
    $nap = $nap * 2 > 0.02 ? 0.02 : $nap * 2;
  }
}`;
const FIONREAD = 0x541b;
const SIOCOUTQ = 0x5411;

/** One long-lived perl helper answering "has the reader taken everything we wrote?". */
class DrainProbe {
  private buf = '';
  private waiter: ((a: 'drained' | 'gone') => void) | undefined;
  private broken = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly log: Logger,
  ) {
    child.stdio[3]!.on('data', (b: Buffer) => {
      this.buf += b.toString();
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (line !== 'drained' && line !== 'gone') this.fail(`drain probe: ${line}`);
        else this.answer(line);
      }
    });
    child.on('error', (err) => this.fail(`drain probe: ${errorText(err)}`));
    child.on('exit', () => this.fail('drain probe exited'));
    child.stdin!.on('error', () => undefined);
  }

  static start(kind: 'pipe' | 'socket', log: Logger): DrainProbe {
    const child = spawn('perl', ['-e', PROBE, String(kind === 'pipe' ? FIONREAD : SIOCOUTQ)], { stdio: ['pipe', 'inherit', 'inherit', 'pipe'] });
    child.unref();
    return new DrainProbe(child, log);
  }

  /** Resolves once the reader took all we wrote ('drained') or left ('gone'). Without a working helper: 'drained' (acknowledged on write), logged once. */
  wait(): Promise<'drained' | 'gone'> {
    if (this.broken) return Promise.resolve('drained');
    return new Promise((resolve) => {
      this.waiter = resolve;
      this.child.stdin!.write('?\n');
    });
  }

  private answer(a: 'drained' | 'gone'): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.(a);
  }

  private fail(why: string): void {
    if (this.broken) return;
    this.broken = true;
    this.log.warn({ event: 'queue.drain_probe_failed', why }, 'cannot tell when the reader has read an item: items are acknowledged once written into the pipe');
    this.answer('drained');
  }

  close(): void {
    this.broken = true;
    this.child.stdin!.end();
    (this.child.stdio[3] as unknown as { destroy?: () => void }).destroy?.();
  }
}
