import type { Command } from 'commander';

/** lock, elect, queue, barrier (see coordination/). */
export function coordinationCommands(): Command[] {
  return [];
}
