import type { LoadTick } from './load-figures';

/**
 * The live per-backend view of `mesh load` and `mesh demo`: each second,
 * every backend's share of that second's calls. On a terminal it redraws a
 * small table with bars in place; otherwise one plain timestamped line per
 * second, so logs and CI captures stay readable.
 */
export class TrafficView {
  private readonly seen = new Set<string>();
  private drawnLines = 0;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly tty = Boolean(process.stdout.isTTY),
  ) {}

  /** Print a narrated event (demo steps) above the live table. */
  note(text: string): void {
    this.clear();
    this.out.write(`${new Date().toISOString()} ${text}\n`);
  }

  render(tick: LoadTick, header = ''): void {
    for (const b of Object.keys(tick.backends)) this.seen.add(b);
    const total = tick.ok + tick.failed;
    const backends = [...this.seen].sort();
    const share = (b: string) => (total ? (100 * (tick.backends[b] ?? 0)) / total : 0);
    const errs = Object.entries(tick.errors)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    // Under overload the ok count alone looks healthy: say how many came back past the deadline, and what the schedule asked for.
    const asked = tick.asked !== undefined ? ` asked=${tick.asked}` : '';
    const late = tick.late ? ` late=${tick.late}` : '';
    if (!this.tty) {
      const parts = backends.map((b) => `${b} ${share(b).toFixed(0)}%`).join(' | ');
      this.out.write(`${new Date().toISOString()} t=${tick.second}s calls=${total}${asked} ok=${tick.ok}${late} failed=${tick.failed}${errs ? ` (${errs})` : ''} ${header}${parts}\n`);
      return;
    }
    const lines = [`t=${tick.second}s  ${total} calls/s${asked}  ok=${tick.ok}${late}  failed=${tick.failed}${errs ? `  (${errs})` : ''}  ${header}`];
    for (const b of backends) {
      const pct = share(b);
      const bar = '█'.repeat(Math.round(pct / 2.5));
      lines.push(`  ${b.padEnd(22)} ${pct.toFixed(1).padStart(5)}%  ${bar}`);
    }
    this.clear();
    this.out.write(lines.join('\n') + '\n');
    this.drawnLines = lines.length;
  }

  /** Erase the live table (terminal only) so the next output starts clean. */
  clear(): void {
    if (this.tty && this.drawnLines > 0) {
      this.out.write(`\x1b[${this.drawnLines}A\x1b[J`);
      this.drawnLines = 0;
    }
  }
}
