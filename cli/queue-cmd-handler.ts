import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Delivery } from '../coordination/queue';
import type { Logger } from '../core/logger';
import { startCommand } from './command-runner';
import type { SignalRelay } from './signal-relay';
import type { Handled } from './queue-handled';

/**
 * Runs CMD with the item on its stdin and in MESH_ITEM, through startCommand
 * (its own process group, a watchdog that stops it if mesh is killed).
 * startCommand gives CMD mesh's own stdin, so a small shell puts the item
 * there: it reads the item from a private file into MESH_ITEM (byte for
 * byte; an environment cannot hold NUL bytes), makes the file its stdin,
 * removes it, and execs CMD, which keeps the pid and the exit code.
 */
const CMD_WRAPPER = 'f=$MESH_ITEM_FILE && unset MESH_ITEM_FILE && MESH_ITEM=$(cat -- "$f"; echo x) && MESH_ITEM=${MESH_ITEM%x} && export MESH_ITEM && exec <"$f" && rm -f -- "$f" && exec "$@"';

export async function runCmd(d: Delivery, argv: string[], signals: SignalRelay, log: Logger): Promise<Handled> {
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
