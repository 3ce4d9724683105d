import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Command, CommanderError } from 'commander';
import { serverCommand } from './command-server';
import { clientCommand } from './command-client';
import { loadCommand } from './command-load';
import { demoCommand } from './command-demo';
import { dashboardCommand } from './command-dashboard';
import { healthCommand } from './command-health';
import { xdsCommand } from './command-xds';
import { coordinationCommands } from './commands-coordination';
import { observeCommands } from './commands-observe';
import { CommandFailure, errorText } from './common';
import { losslessArgv } from './argv-bytes';
import { useCliLogging } from '../core/logger';

/** package.json's version, found from both cli/ (sources) and dist/cli/. */
function packageVersion(): string {
  const file = [path.resolve(__dirname, '..', 'package.json'), path.resolve(__dirname, '..', '..', 'package.json')].find((f) => existsSync(f));
  return file ? (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version : 'unknown';
}

/**
 * `mesh`: argument parsing and dispatch only. Usage errors (unknown flags,
 * bad values, missing arguments) are one line on stderr and exit code 2;
 * runtime failures (etcd unreachable, port taken) one line and exit code 1.
 */
function commandPath(cmd: Command): string {
  return cmd.parent ? `${commandPath(cmd.parent)} ${cmd.name()}` : cmd.name();
}

export function buildProgram(): Command {
  const program = new Command('mesh')
    .description('gRPC client-side load balancing on etcd, and the classic etcd coordination patterns')
    .version(packageVersion())
    .showSuggestionAfterError(true);
  for (const cmd of [serverCommand(), clientCommand(), loadCommand(), demoCommand(), dashboardCommand(), healthCommand(), xdsCommand(), ...coordinationCommands(), ...observeCommands()]) program.addCommand(cmd);
  configureErrors(program);
  return program;
}

/** Every command: no help dump after an error, and throw instead of exiting so exit codes are ours. */
function configureErrors(cmd: Command): void {
  cmd.exitOverride();
  // A command group (`mesh`, `mesh kv`, ...) run without a known subcommand:
  // one line, like every other usage error, instead of the whole help.
  const hasAction = (cmd as unknown as { _actionHandler: unknown })._actionHandler != null;
  if (cmd.commands.length > 0 && !hasAction) {
    cmd.allowExcessArguments(true).action(() => {
      const given = cmd.args[0];
      cmd.error(given === undefined ? `${commandPath(cmd)}: missing command (see ${commandPath(cmd)} --help)` : `${commandPath(cmd)}: unknown command '${given}' (see ${commandPath(cmd)} --help)`);
    });
  }
  cmd.configureOutput({ outputError: (str, write) => write(str.split('\n')[0].replace(/^error: /, 'mesh: ') + '\n') });
  cmd.showHelpAfterError(false);
  for (const sub of cmd.commands) configureErrors(sub);
}

/**
 * Parse `args` (without "node mesh") exactly as `mesh` would, running no
 * command: the error message, or undefined when the command line is valid.
 * Used to check docker-compose.yml and scripts against the real parser.
 */
export async function checkArgs(args: string[]): Promise<string | undefined> {
  const program = buildProgram();
  const quiet = (cmd: Command) => {
    cmd.configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
    if (cmd.commands.length === 0) cmd.action(() => undefined);
    cmd.commands.forEach(quiet);
  };
  quiet(program);
  try {
    await program.parseAsync(['node', 'mesh', ...args]);
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

export async function main(argv: string[]): Promise<void> {
  // The CLI's own logs (info, pretty on a terminal); the library's default is quieter.
  useCliLogging();
  // grpc-js logs its own errors to stderr (e.g. a port already taken), which
  // would double our one-line errors; GRPC_VERBOSITY still turns them on.
  if (process.env.GRPC_VERBOSITY === undefined) grpc.setLogVerbosity(grpc.logVerbosity.NONE);
  // `mesh ... | head`: a closed stdout is the reader's choice, not an error.
  let hungUp = false;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    // The terminal went away (its pty closed): a hang-up, whichever reaches us
    // first, the kernel's SIGHUP or a write failing with EIO. Raised once, so
    // a command that handles SIGHUP (the demo cleans up) sees one hang-up.
    if (err.code === 'EIO') {
      if (!hungUp) {
        hungUp = true;
        process.kill(process.pid, 'SIGHUP');
      }
      return;
    }
    throw err;
  });
  const program = buildProgram();
  try {
    // Arguments keep bytes that are not UTF-8 (see argv-bytes.ts), so kv/pub get them back raw.
    await program.parseAsync(losslessArgv(argv));
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version arrive here too, with exit code 0.
      process.exit(err.exitCode === 0 ? 0 : 2);
    }
    if (err instanceof CommandFailure) {
      process.stderr.write(`mesh: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`mesh: ${errorText(err)}\n`);
    process.exit(1);
  }
}

if (require.main === module) void main(process.argv);
