/**
 * Process lifecycle shared by the long-running observe commands (sub,
 * progress watch, top): stop on SIGINT/SIGTERM, and make sure the process
 * really ends once a command is done even if a library left a timer or a
 * gRPC channel behind (stdout to a pipe, file or TTY is written
 * synchronously on Linux, so nothing printed is lost by exiting).
 */

/** Resolves on the first SIGINT or SIGTERM; `dispose()` removes the handlers. */
export function stopSignal(): { stopped: Promise<NodeJS.Signals>; dispose: () => void } {
  let dispose = () => undefined as void;
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    const on = (sig: NodeJS.Signals) => resolve(sig);
    process.once('SIGINT', on);
    process.once('SIGTERM', on);
    dispose = () => {
      process.removeListener('SIGINT', on);
      process.removeListener('SIGTERM', on);
    };
  });
  return { stopped, dispose };
}

/** Set the exit code and end the process shortly if something still holds the event loop. */
export function finish(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 1_000).unref();
}
