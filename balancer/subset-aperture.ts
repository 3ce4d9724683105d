import { fnv1a32 } from './subset';

/**
 * Deterministic aperture over membership ranks (after Finagle's
 * "deterministic aperture"): clients and backends sit evenly spaced on one
 * ring, client `rank` of `members` at rank/members, backend j of S at j/S in
 * one fixed order; a client takes the `size` backends from the one at its
 * position on. Placed so, any `size` consecutive backends are the window of
 * floor or ceil of members x size / S clients: the balance is exact for any
 * member count, not only multiples of a round.
 *
 * Why a ring over ranks rather than the SRE subsets over ranks: a rank is
 * the position among live members by create revision, so a member leaving
 * shifts every later rank by one. SRE subsets of ids k and k-1 share almost
 * nothing, so a leave re-deals about half the clients wholesale; on the ring
 * a rank shift or a member count change moves each client's position by a
 * fraction of a backend, and the moves sum to about S/2 connections however
 * many clients there are (test/subset-members.test.ts measures both).
 *
 * The order is a sort by a keyed hash, as subset.ts's rounds: a backend
 * leaving keeps the others' relative order. Windows are nested in `size`:
 * the window of n is the first n of the window of n + 1, so a size that
 * changes by one (auto's taper, subset-auto.ts) moves one connection.
 *
 * Pure and deterministic, like subsetFor.
 */

const RING_SEED = fnv1a32('aperture-ring');

/** The ring order of `backends` (no duplicates): ascending keyed hash, ties by name. */
export function ringOrder(backends: readonly string[]): string[] {
  return backends
    .map((b) => ({ b, k: fnv1a32(b, RING_SEED) }))
    .sort((x, y) => x.k - y.k || (x.b < y.b ? -1 : x.b > y.b ? 1 : 0))
    .map((e) => e.b);
}

/** Where client `rank` of `members` starts on a ring of `backends` backends. */
export function apertureStart(rank: number, members: number, backends: number): number {
  return Math.floor((rank * backends) / members);
}

/**
 * The `size` backends member `rank` (0-based, of `members` live members)
 * should use; all of them, sorted, when there are no more than `size`.
 */
export function apertureSubset(backends: readonly string[], rank: number, members: number, size: number): string[] {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`subset size must be a positive integer, got ${size}`);
  if (!Number.isInteger(members) || members < 1) throw new RangeError(`member count must be a positive integer, got ${members}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= members) throw new RangeError(`rank must be an integer in 0..${members - 1}, got ${rank}`);
  const unique = [...new Set(backends)];
  if (unique.length <= size) return unique.sort();
  const order = ringOrder(unique);
  const start = apertureStart(rank, members, order.length);
  const picked: string[] = [];
  for (let i = 0; i < size; i++) picked.push(order[(start + i) % order.length]);
  return picked.sort();
}
