import { execFileSync, spawnSync } from 'node:child_process';

/**
 * Make Debian packages present for a peer test, the way scripts/setup.sh
 * does: installed only when `present()` says they are missing, quietly, as
 * root (or through sudo when it needs no password). Returns why not when
 * they cannot be had, so the test can skip with that one line; on CI (root,
 * Debian) they are installed and the tests run.
 */
export function ensureDebianPackages(packages: string[], present: () => boolean): { ok: true } | { ok: false; reason: string } {
  if (present()) return { ok: true };
  const root = process.getuid?.() === 0;
  const sudo = root ? [] : ['sudo', '-n'];
  if (!root && spawnSync('sudo', ['-n', 'true']).status !== 0) {
    return { ok: false, reason: `${packages.join(' ')} missing and not root (no password-less sudo) to install them` };
  }
  if (spawnSync('apt-get', ['--version']).status !== 0) return { ok: false, reason: `${packages.join(' ')} missing and no apt-get on this machine` };
  try {
    const [cmd, ...pre] = [...sudo, 'apt-get'];
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    // A fresh machine has no package lists yet; an install without them fails.
    execFileSync(cmd, [...pre, 'update', '-qq'], { env, stdio: 'ignore', timeout: 300_000 });
    execFileSync(cmd, [...pre, 'install', '-y', '-qq', ...packages], { env, stdio: 'ignore', timeout: 900_000 });
  } catch (err) {
    return { ok: false, reason: `apt-get install ${packages.join(' ')} failed: ${(err as Error).message.split('\n')[0]}` };
  }
  return present() ? { ok: true } : { ok: false, reason: `${packages.join(' ')} installed but still not usable` };
}
