import pino, { Logger } from 'pino';

/**
 * The one logger of a mesh process: pino, structured, one event per line on
 * stderr (stdout belongs to command output such as replies and `--json`).
 * Human-friendly (pino-pretty) only when stderr is a terminal, so pipes, CI
 * and log shippers always get JSON. Level from MESH_LOG_LEVEL (default info).
 */
export type { Logger };

let root: Logger | undefined;

export function rootLogger(): Logger {
  if (root) return root;
  const level = process.env.MESH_LOG_LEVEL ?? 'info';
  if (process.stderr.isTTY && process.env.MESH_LOG_FORMAT !== 'json') {
    // Synchronous pretty stream: no worker thread, nothing lost on exit.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pretty = require('pino-pretty') as (o: object) => NodeJS.WritableStream;
    root = pino({ level }, pretty({ destination: 2, sync: true, singleLine: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname,event,from,to,reason' }));
  } else {
    root = pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  }
  return root;
}

/** A child logger tagged with the component that emits the events. */
export function componentLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}
