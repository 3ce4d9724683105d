import type { Command } from 'commander';
import { pubCommand, subCommand } from './command-pubsub';
import { progressCommand } from './command-progress';
import { lsCommand } from './command-ls';
import { topCommand } from './command-top';
import { kvCommand } from './command-kv';

/** pub, sub, progress, ls, top, kv (see coordination/). */
export function observeCommands(): Command[] {
  return [pubCommand(), subCommand(), progressCommand(), lsCommand(), topCommand(), kvCommand()];
}
