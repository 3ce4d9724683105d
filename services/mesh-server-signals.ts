import { componentLogger } from '../core/logger';
import type { SignalOptions } from './mesh-server-options';

/** Anything that drains on a signal: a MeshServer, or a server built on one (GreeterServer). */
export interface Drainable {
  /** Leave the mesh and stop; idempotent. */
  shutdown(reason: string): Promise<void>;
}

/**
 * SIGTERM/SIGINT as `mesh server` handles them: the first drains (`shutdown`),
 * then calls `onDrained` and exits 0 (1 if either failed; neither with
 * `exit: false`); a second one
 * exits 130 at once, for a person who does not want to wait. Returns a
 * function that removes the handlers (idempotent).
 */
export function drainOnSignals(target: Drainable, opts: SignalOptions = {}): () => void {
  const log = componentLogger('signals');
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      log.warn({ event: 'cli.signal_again', signal: sig }, 'second signal: exiting now');
      process.exit(130);
    }
    signalled = true;
    let failed = false;
    void target
      .shutdown(`received ${sig}`)
      .then(() => opts.onDrained?.())
      .catch((err: unknown) => {
        failed = true;
        log.error({ event: 'server.drain_failed', err: String(err) }, `drain failed: ${String(err)}`);
      })
      .then(() => {
        if (opts.exit !== false) process.exit(failed ? 1 : 0);
      });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let removed = false;
  return () => {
    if (removed) return;
    removed = true;
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
}
