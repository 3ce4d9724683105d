import { statSync, accessSync, constants } from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { BadRateError, parseRate, type RateSchedule } from '../services/load-schedule';
import { intIn, parseDuration } from './parse';

/** Flags of the load modes and reports, shared by `mesh load` and `mesh demo`. */
export interface LoadModeFlags {
  rate?: RateSchedule;
  total?: number;
  warmup: number;
  report?: string;
  csv?: string;
}

export function rateArg(value: string): RateSchedule {
  try {
    return parseRate(value);
  } catch (err) {
    if (err instanceof BadRateError) throw new InvalidArgumentError(err.message);
    throw err;
  }
}

/** A file to write at the end of the run: its directory must exist and be writable now, not after a 10-minute run. */
export function outputFileArg(value: string): string {
  if (value.trim() === '') throw new InvalidArgumentError('must not be empty');
  const dir = path.dirname(path.resolve(value));
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    throw new InvalidArgumentError(`${JSON.stringify(value)}: directory ${dir} does not exist`);
  }
  if (!isDir) throw new InvalidArgumentError(`${JSON.stringify(value)}: ${dir} is not a directory`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new InvalidArgumentError(`${JSON.stringify(value)}: directory ${dir} is not writable`);
  }
  try {
    if (statSync(value).isDirectory()) throw new InvalidArgumentError(`${JSON.stringify(value)} is a directory`);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
  }
  return value;
}

function warmupArg(value: string): number {
  return parseDuration(value);
}

export function addReportOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--report <file.html>', 'write a self-contained HTML report (charts per second: calls/s and errors, latency percentiles, backend shares, events)').argParser(outputFileArg))
    .addOption(new Option('--csv <file>', 'write one CSV row per second with the same series as --report').argParser(outputFileArg));
}

export function addLoadModeOptions(cmd: Command): Command {
  cmd
    .addOption(new Option('--rate <rate>', 'open loop: calls/s started on schedule whatever earlier calls do (latency from each intended start); R, or START:END:STEP/INTERVAL as a step load, e.g. 100:2000:100/5s').argParser(rateArg).conflicts('concurrency'))
    .addOption(new Option('--total <n>', 'stop after N measured calls (without --duration: no time limit)').argParser(intIn(1, 100_000_000)))
    .addOption(new Option('--warmup <duration>', 'load run before measuring, left out of every figure').default(0, '0s').argParser(warmupArg));
  return addReportOptions(cmd);
}
