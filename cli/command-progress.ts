import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import { addEtcdOptions, CommandFailure, connectEtcd, type EtcdFlags } from './common';
import { intIn, parsePrefix } from './parse';
import { finish, stopSignal } from './observe-lifecycle';
import { DEFAULT_PROGRESS_PREFIX, DONE_PERCENT, ProgressWatch, setProgress, type ProgressUpdate } from '../coordination/progress';
import { componentLogger } from '../core/logger';
import { argBytes } from './argv-bytes';

/**
 * `mesh progress set JOB PERCENT` writes `<prefix>/<JOB>` = PERCENT.
 * `mesh progress watch JOB` prints every change (a bar on a terminal, plain
 * `JOB 42%` lines otherwise) and exits 0 once the job is at 100.
 * JOB and --prefix are the raw argv bytes, in the key and in what watch
 * prints, so a job name that is not UTF-8 is the same key etcdctl names.
 */

/** A job name: non-empty, printable, no spaces; `/` allowed inside (e.g. build/42). */
export function parseJob(value: string): string {
  if (value === '') throw new InvalidArgumentError('must not be empty');
  if (/[\s\x00-\x1f\x7f]/.test(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} must not contain spaces or control characters`);
  if (value.startsWith('/') || value.endsWith('/') || value.includes('//')) throw new InvalidArgumentError(`${JSON.stringify(value)} must not start or end with "/" or contain "//"`);
  return value;
}

interface ProgressFlags extends EtcdFlags {
  prefix: string;
}

function prefixOption(): Option {
  return new Option('--prefix <prefix>', 'key prefix of progress keys').default(DEFAULT_PROGRESS_PREFIX).argParser(parsePrefix);
}

function setCommand(): Command {
  const cmd = new Command('set')
    .description('report JOB at PERCENT (an integer 0..100; 100 = done)')
    .addArgument(new Argument('<job>', 'job name').argParser(parseJob))
    .addArgument(new Argument('<percent>', 'integer 0..100').argParser(intIn(0, DONE_PERCENT)))
    .addOption(prefixOption());
  addEtcdOptions(cmd);
  return cmd.action(async (job: string, percent: number, flags: ProgressFlags) => {
    const etcd = await connectEtcd(flags);
    try {
      await setProgress(etcd, argBytes(job), percent, { prefix: argBytes(flags.prefix) });
    } finally {
      etcd.close();
    }
  });
}

/** `[██████░░░░░░░░░░░░░░] build 30%` — redrawn in place. */
export function progressBar(job: string, percent: number, width = 30): string {
  return progressBarBytes(job, percent, width).toString();
}

/** progressBar with the job's own bytes (which need not be UTF-8). */
export function progressBarBytes(job: string | Buffer, percent: number, width = 30): Buffer {
  const full = Math.round((percent / DONE_PERCENT) * width);
  return Buffer.concat([Buffer.from(`[${'█'.repeat(full)}${'░'.repeat(width - full)}] `), Buffer.from(job), Buffer.from(` ${percent}%`)]);
}

function watchCommand(): Command {
  const cmd = new Command('watch')
    .description('show JOB\'s progress as it changes (bar on a terminal, `JOB 42%` lines otherwise); exit 0 at 100')
    .addArgument(new Argument('<job>', 'job name').argParser(parseJob))
    .addOption(prefixOption());
  addEtcdOptions(cmd);
  return cmd.action(async (job: string, flags: ProgressFlags) => {
    const log = componentLogger('cli.progress', { job });
    const tty = Boolean(process.stdout.isTTY);
    const etcd = await connectEtcd(flags);
    const signal = stopSignal();
    const jobBytes = argBytes(job);
    const watch = new ProgressWatch(etcd, jobBytes, { prefix: argBytes(flags.prefix), log });
    try {
      const outcome = await new Promise<'done' | NodeJS.Signals>((resolve) => {
        watch.on('progress', (u: ProgressUpdate) => {
          if (tty) process.stdout.write(Buffer.concat([Buffer.from('\r\x1b[2K'), progressBarBytes(jobBytes, u.percent), Buffer.from(u.percent === DONE_PERCENT ? '\n' : '')]));
          else process.stdout.write(Buffer.concat([jobBytes, Buffer.from(` ${u.percent}%\n`)]));
          if (u.percent === DONE_PERCENT) resolve('done');
        });
        watch.on('removed', (rev: string) => log.warn({ event: 'progress.removed', revision: rev }, `progress key of ${job} was deleted; still waiting`));
        void signal.stopped.then(resolve);
        watch.start();
      });
      if (outcome !== 'done') {
        if (tty) process.stdout.write('\n');
        // Not done: a script running `mesh progress watch JOB && next` must not go on.
        throw new CommandFailure(`interrupted by ${outcome} before ${job} reached ${DONE_PERCENT}%`, 130);
      }
      finish(0);
    } finally {
      signal.dispose();
      watch.close();
      etcd.close();
    }
  });
}

export function progressCommand(): Command {
  return new Command('progress').description('distributed notification: a job reports progress in a key; watchers react, and exit at 100').addCommand(setCommand()).addCommand(watchCommand());
}
