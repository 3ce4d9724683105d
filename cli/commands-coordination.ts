import type { Command } from 'commander';
import { lockCommand } from './command-lock';
import { electCommand } from './command-elect';
import { queueCommand } from './command-queue';
import { barrierCommand } from './command-barrier';

/** lock, elect, queue, barrier (see coordination/). */
export function coordinationCommands(): Command[] {
  return [lockCommand(), electCommand(), queueCommand(), barrierCommand()];
}
