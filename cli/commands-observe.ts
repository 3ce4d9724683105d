import type { Command } from 'commander';

/** pub, sub, progress, ls, top, kv (see coordination/). */
export function observeCommands(): Command[] {
  return [];
}
