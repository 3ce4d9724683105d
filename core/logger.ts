import pino, { Logger } from 'pino';

/**
 * The one logger of a mesh process: pino, structured, one event per line on
 * stderr (stdout belongs to command output such as replies and `--json`).
 *
 * Two defaults, because the package is both a library and a CLI:
 * - as a library (the default until someone says otherwise), it is a guest
 *   in its host's stderr: JSON, warnings and errors only (MESH_LOG_LEVEL
 *   overrides), never pretty. A host hands it its own logger with
 *   `setMeshLogger()`, and every component made after that logs there.
 * - the `mesh` CLI calls `useCliLogging()` first: info level, and
 *   human-friendly lines when stderr is a terminal and `pino-pretty` is
 *   installed (a devDependency: an install without dev dependencies gets
 *   JSON, never a crash), so pipes, CI and log shippers always get JSON.
 */
export type { Logger };

/**
 * What a host may hand in: a pino logger (used as is, with its own level),
 * or any object with the usual level methods (console, bunyan, a test
 * spy...). The latter is called as `method(fields, message)`, pino's order.
 */
export interface LevelLogger {
  error(fields: object, msg?: string): void;
  warn(fields: object, msg?: string): void;
  info(fields: object, msg?: string): void;
  debug?(fields: object, msg?: string): void;
  trace?(fields: object, msg?: string): void;
  fatal?(fields: object, msg?: string): void;
}

export interface SetLoggerOptions {
  /** For a non-pino logger: the lowest level passed on. Default 'info'. */
  level?: pino.LevelWithSilent;
}

let root: Logger | undefined;

/** The library's default: warn and above, JSON, until the host or the CLI says otherwise. */
function libraryLogger(): Logger {
  return pino({ level: process.env.MESH_LOG_LEVEL ?? 'warn', base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

export function rootLogger(): Logger {
  root ??= libraryLogger();
  return root;
}

function isPino(l: Logger | LevelLogger): l is Logger {
  const p = l as Partial<Logger>;
  return typeof p.child === 'function' && typeof p.levels === 'object' && typeof p.isLevelEnabled === 'function';
}

/**
 * Route every mesh log to the host's logger. Components keep the logger they
 * were made with, so call this before creating etcd clients, registrations,
 * resolvers or coordination objects.
 */
export function setMeshLogger(logger: Logger | LevelLogger, opts: SetLoggerOptions = {}): void {
  if (isPino(logger)) {
    root = logger;
    return;
  }
  // Any other logger: a pino in front of it whose "stream" hands each event
  // back as an object, so every component keeps pino's API (child bindings,
  // levels) and the host sees plain fields and a message.
  const labels = pino.levels.labels;
  const stream = {
    write(line: string): void {
      const { level, msg, time: _time, ...fields } = JSON.parse(line) as { level: number; msg?: string; time?: number } & Record<string, unknown>;
      const name = (labels[level] ?? 'info') as keyof LevelLogger;
      const fn = logger[name] ?? (level >= 50 ? logger.error : level >= 40 ? logger.warn : logger.info);
      fn.call(logger, fields, msg);
    },
  };
  root = pino({ level: opts.level ?? 'info', base: undefined }, stream);
}

/** pino-pretty's factory when it is installed (it is a devDependency), else undefined. */
function prettyFactory(): ((o: object) => NodeJS.WritableStream) | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('pino-pretty') as (o: object) => NodeJS.WritableStream;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined;
    throw err;
  }
}

/**
 * The CLI's logging: info unless MESH_LOG_LEVEL says otherwise; pretty on a
 * terminal when pino-pretty is there (MESH_LOG_FORMAT=json keeps JSON).
 */
export function useCliLogging(): void {
  const level = process.env.MESH_LOG_LEVEL ?? 'info';
  const pretty = process.stderr.isTTY && process.env.MESH_LOG_FORMAT !== 'json' ? prettyFactory() : undefined;
  // Synchronous streams: no worker thread, nothing lost on exit.
  root = pretty
    ? pino({ level }, pretty({ destination: 2, sync: true, singleLine: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname,event,from,to,reason' }))
    : pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

/** A child logger tagged with the component that emits the events. */
export function componentLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}
