import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Peers usable, or the one line saying why not (the test's skip note). */
export type PeerAvailability = { ok: true } | { ok: false; reason: string };

/**
 * Make Debian packages present for a peer test, the way scripts/setup.sh
 * does (npm test runs that first, so this is the fallback for a single file
 * run on a bare machine): installed only when `present()` says they are
 * missing, quietly, as root or through password-less sudo. Never throws:
 * when they cannot be had it says why, and the tests skip with that line;
 * on CI (root, Debian) they are installed and the tests run.
 */
export async function ensureDebianPackages(packages: string[], present: () => boolean): Promise<PeerAvailability> {
  if (present()) return { ok: true };
  const root = process.getuid?.() === 0;
  if (!root && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status !== 0) {
    return { ok: false, reason: `${packages.join(' ')} missing, and not root (nor password-less sudo) to install them` };
  }
  if (spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status !== 0) return { ok: false, reason: `${packages.join(' ')} missing, and no apt-get here` };
  const [cmd, ...pre] = root ? ['apt-get'] : ['sudo', '-n', 'apt-get'];
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    // A fresh machine has no package lists yet; an install without them fails.
    await execFileP(cmd, [...pre, 'update', '-qq'], { env, timeout: 300_000 });
    await execFileP(cmd, [...pre, 'install', '-y', '-qq', ...packages], { env, timeout: 900_000, maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    return { ok: false, reason: `apt-get install ${packages.join(' ')} failed: ${(err as Error).message.split('\n')[0]}` };
  }
  return present() ? { ok: true } : { ok: false, reason: `${packages.join(' ')} installed, but still not usable` };
}
