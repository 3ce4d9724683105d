import { Command, Option } from 'commander';
import { addEtcdOptions, connectEtcd } from './common';
import { parsePositiveDuration } from './parse';
import { finish, stopSignal } from './observe-lifecycle';
import { addMonitorOptions, monitorOptions, renderView, type MonitorFlags } from './command-ls';
import { ClusterMonitor, diffViews, type ClusterView } from '../coordination/monitor';
import { componentLogger } from '../core/logger';
import { jsonSafe } from '../coordination/monitor-text';

/**
 * `mesh top`: the live `mesh ls`. On a terminal the screen is redrawn on
 * every change and each second (TTL countdown); otherwise one line per
 * change (`<ISO time> +|-|~ endpoint|election|lock ...`, the initial state
 * as `+` lines); with --json one ClusterView per change. Ends on
 * SIGINT/SIGTERM or after --duration, exit 0.
 */

interface TopFlags extends MonitorFlags {
  duration?: number;
}

export function topCommand(): Command {
  const cmd = new Command('top')
    .description('live view of services, endpoints, lease TTLs, election leaders and lock holders, updated on every change')
    .addOption(new Option('--duration <duration>', 'exit after this long (default: until Ctrl-C)').argParser(parsePositiveDuration));
  addEtcdOptions(addMonitorOptions(cmd));
  return cmd.action(async (flags: TopFlags) => {
    const tty = Boolean(process.stdout.isTTY);
    const etcd = await connectEtcd(flags);
    const signal = stopSignal();
    const monitor = new ClusterMonitor(etcd, monitorOptions(flags), componentLogger('monitor'));
    let shown: ClusterView | undefined;
    let tick: NodeJS.Timeout | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      monitor.on('update', (view: ClusterView) => {
        const changes = diffViews(shown, view);
        const first = shown === undefined;
        shown = view;
        if (tty && !flags.json) {
          const head = `mesh top  ${new Date().toLocaleTimeString()}  revision ${view.revision}  (Ctrl-C to quit)`;
          process.stdout.write(`\x1b[H\x1b[2J${head}\n\n${renderView(view).join('\n')}\n`);
        } else if (flags.json) {
          if (first || changes.length) process.stdout.write(`${jsonSafe(JSON.stringify(view))}\n`);
        } else {
          const at = new Date().toISOString();
          for (const c of changes) process.stdout.write(`${at} ${c}\n`);
        }
      });
      await monitor.start();
      // The TTL column counts down only on a screen; lines and JSON report changes only.
      if (tty && !flags.json) tick = setInterval(() => monitor.refresh(), 1_000);
      const ended = new Promise<void>((resolve) => {
        if (flags.duration !== undefined) timer = setTimeout(resolve, flags.duration);
      });
      await Promise.race([signal.stopped, ended]);
      finish(0);
    } finally {
      if (tick) clearInterval(tick);
      if (timer) clearTimeout(timer);
      signal.dispose();
      monitor.close();
      etcd.close();
    }
  });
}
