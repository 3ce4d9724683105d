import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../core/logger';
import { errorText } from '../core/etcd-errors';

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
export class DrainProbe {
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
