import { AUTO_SUBSET_ABOVE, AUTO_SUBSET_SIZE, fnv1a32, subsetFor } from './subset';
import { apertureSubset } from './subset-aperture';

/**
 * Who a client is when it picks its subset: an id (given with
 * `--client-id`, or hashed from host and pid) for the SRE subsets of
 * subset.ts, or a rank among `members` live clients (subset-members.ts) for
 * the aperture ring of subset-aperture.ts.
 */
export type SubsetIdentity = { kind: 'id'; id: number } | { kind: 'rank'; rank: number; members: number };

/** A short stable name of an identity, for logs and to tell when it changed. */
export function identityKey(who: SubsetIdentity): string {
  return who.kind === 'id' ? `id ${who.id}` : `rank ${who.rank} of ${who.members}`;
}

/** The seed of this client's order of replacements (nextHeld): as nextSubset's for ids. */
export function identitySeed(who: SubsetIdentity, memberKey = ''): number {
  return fnv1a32(who.kind === 'id' ? `client:${who.id}` : `member:${memberKey}`);
}

/** The registry size from which `auto` uses exactly AUTO_SUBSET_SIZE: 180. */
export const AUTO_SUBSET_FULL_AT = 2 * AUTO_SUBSET_ABOVE - AUTO_SUBSET_SIZE;

/**
 * How many backends `auto` hands over from a registry of `registered`: all
 * of them up to AUTO_SUBSET_ABOVE, then one fewer per backend beyond it
 * (101 -> 99, 150 -> 50) down to AUTO_SUBSET_SIZE from AUTO_SUBSET_FULL_AT
 * on. A step, as the rule had before (100 -> all, 101 -> 20), sent every
 * client from 100 connections to 20 and back when one key came and went at
 * the boundary; with the taper one key's churn moves about one connection
 * per client anywhere on the way (test/subset-members.test.ts).
 */
export function autoSubsetSize(registered: number): number {
  if (registered <= AUTO_SUBSET_ABOVE) return registered;
  return Math.max(AUTO_SUBSET_SIZE, 2 * AUTO_SUBSET_ABOVE - registered);
}

/**
 * The ideal subset of `size` from `registry` for `who`, as a fresh client
 * would pick it. `auto`: the taper's size, nested so a size one smaller is
 * the same set less one backend:
 * - a rank: the aperture window of that size (windows are nested);
 * - an id: subsetFor(registry, id, AUTO_SUBSET_SIZE), the same as
 *   `--subset 20` would give, plus the first size - 20 of the other
 *   backends in this client's own hash order (so the extras of different
 *   clients spread, and a shrinking size drops one extra at a time).
 */
export function idealSubset(registry: readonly string[], who: SubsetIdentity, size: number, auto: boolean): string[] {
  if (who.kind === 'rank') return apertureSubset(registry, who.rank, who.members, size);
  if (!auto || size <= AUTO_SUBSET_SIZE) return subsetFor(registry, who.id, size);
  const core = subsetFor(registry, who.id, AUTO_SUBSET_SIZE);
  const inCore = new Set(core);
  const seed = fnv1a32(`extra:${who.id}`);
  const extras = [...new Set(registry)]
    .filter((b) => !inCore.has(b))
    .map((b) => ({ b, k: fnv1a32(b, seed) }))
    .sort((x, y) => x.k - y.k || (x.b < y.b ? -1 : 1))
    .slice(0, size - AUTO_SUBSET_SIZE)
    .map((e) => e.b);
  return [...core, ...extras].sort();
}
