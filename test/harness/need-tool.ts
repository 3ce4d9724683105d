import type { TestContext } from 'vitest';
import type { PeerAvailability } from './peer-debian';

/**
 * A test whose tool (a Debian package, a kernel feature) is missing: skipped
 * with the reason on a developer's machine, but failed under CI=true, naming
 * what to install, so a CI run never passes with a guarantee left unchecked
 * (scripts/setup.sh installs every such tool on a fresh machine).
 */
export function needTool(ctx: TestContext, avail: PeerAvailability, install: string): void {
  if (avail.ok) return;
  const line = `${avail.reason} (install: ${install})`;
  if (process.env.CI === 'true') throw new Error(`missing on CI: ${line}`);
  ctx.skip(line);
}
