import { hostname } from 'node:os';

/**
 * Deterministic subsetting (Google SRE book, "Load Balancing in the
 * Datacenter", chapter 20): each client connects to `size` of the S
 * backends instead of all of them, so M clients make M x size connections,
 * not M x S, and every backend still gets about M x size / S of them.
 *
 * The book's algorithm, with one change for stability:
 * - subset_count = ceil(S / size) subsets per round; a round is
 *   subset_count consecutive client ids, and every round covers every
 *   backend (the last subset wraps round to the start, so S need not be a
 *   multiple of size).
 * - round = floor(client_id / subset_count) seeds the order of the backends
 *   for that round, so successive rounds spread differently and no backend
 *   is always paired with the same neighbours.
 * - subset_id = client_id % subset_count picks the slice.
 * The book shuffles the backend list with the round as the seed; a shuffle
 * of a list with one backend missing is a different permutation, so losing
 * one backend would move nearly every client. Here the order is instead a
 * sort by a keyed hash of (round, backend): removing a backend leaves the
 * relative order of the others unchanged, and only the slices after its
 * position shift by one, so each affected client changes one connection.
 *
 * Contract: pure and deterministic: the same (backends as a set, client id,
 * size) always gives the same subset on every host and Node version. With
 * dense client ids 0..M-1 (M a multiple of subset_count) every backend gets
 * exactly M x size / S connections when size divides S; hashed ids are
 * balanced only statistically (see docs/cli.md). Used for ids given by the
 * user (`--client-id`) and hashed ones; clients ranked by etcd membership
 * use the aperture ring instead (subset-aperture.ts).
 */

/** 32-bit FNV-1a of a string's UTF-16 code units: stable across hosts and runs. */
export function fnv1a32(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // Final avalanche (murmur3 fmix32): FNV alone clusters on short keys that differ in one digit.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** Largest client id accepted (`--client-id`): 2^31 - 1. */
export const MAX_CLIENT_ID = 0x7fffffff;

/**
 * The hashed client id: a hash of host name and pid, so two processes on
 * one host, or one pid on two hosts, differ. Stable for the life of the
 * process; a restarted process gets a new id (and so maybe a different
 * subset). Used with `--client-id hash`, and where the client cannot join
 * the etcd membership that ranks clients (its role may not write there).
 * Give `--client-id` (e.g. a StatefulSet ordinal) for ids that are dense
 * and survive restarts.
 */
export function defaultClientId(host = hostname(), pid = process.pid): number {
  return fnv1a32(`${host}/${pid}`) & MAX_CLIENT_ID;
}

/** The backend order of one round: ascending keyed hash, ties (never in practice) by name. */
function roundOrder(backends: readonly string[], round: number): string[] {
  const seed = fnv1a32(`round:${round}`);
  return backends
    .map((b) => ({ b, k: fnv1a32(b, seed) }))
    .sort((x, y) => x.k - y.k || (x.b < y.b ? -1 : x.b > y.b ? 1 : 0))
    .map((e) => e.b);
}

/**
 * The subset of `backends` client `clientId` should use: `size` distinct
 * backends, or all of them when there are no more than `size`. Order of the
 * input does not matter; duplicates are ignored.
 */
export function subsetFor(backends: readonly string[], clientId: number, size: number): string[] {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`subset size must be a positive integer, got ${size}`);
  if (!Number.isInteger(clientId) || clientId < 0) throw new RangeError(`client id must be a non-negative integer, got ${clientId}`);
  const unique = [...new Set(backends)];
  if (unique.length <= size) return unique.sort();
  const count = Math.ceil(unique.length / size);
  const round = Math.floor(clientId / count);
  const order = roundOrder(unique, round);
  const start = (clientId % count) * size;
  const picked: string[] = [];
  for (let i = 0; i < size; i++) picked.push(order[(start + i) % order.length]);
  return picked.sort();
}

/**
 * The subset to hand grpc-js after a registry change, given what this client
 * held before: the resolver's rule, stateful on purpose.
 * - Backends only left (nothing new registered): keep every held backend
 *   that is still registered and replace each lost one with a member of the
 *   new ideal subset (subsetFor) not already held, chosen by a hash keyed by
 *   the client id (so the replacements of different clients spread). Only
 *   clients that held a lost backend change, each by one connection per
 *   lost backend: the least any scheme can move, even when ceil(S/N)
 *   changes and the ideal subsets are all re-dealt.
 * - Anything else (first set, a backend joined): the ideal subset, so new
 *   backends get their share and a flapping backend's return restores
 *   exactly the subsets before it left.
 * Balance after losses is therefore statistical until the next join.
 */
export function nextSubset(prevRegistry: readonly string[] | undefined, held: readonly string[] | undefined, registry: readonly string[], clientId: number, size: number): string[] {
  return nextHeld(prevRegistry, held, registry, subsetFor(registry, clientId, size), size, fnv1a32(`client:${clientId}`));
}

/**
 * nextSubset's rule for any ideal (SRE subsets, the aperture ring of
 * subset-aperture.ts, auto's taper of subset-auto.ts): `ideal` is what a
 * fresh client would pick from `registry`, `size` how many it wants (it may
 * grow as backends leave: auto's taper), `seed` keys this client's order of
 * replacements.
 */
export function nextHeld(prevRegistry: readonly string[] | undefined, held: readonly string[] | undefined, registry: readonly string[], ideal: readonly string[], size: number, seed: number): string[] {
  if (!prevRegistry || !held) return [...ideal];
  const before = new Set(prevRegistry);
  if (registry.some((b) => !before.has(b))) return [...ideal];
  const now = new Set(registry);
  const kept = held.filter((b) => now.has(b));
  const want = Math.min(size, now.size);
  if (kept.length === held.length && kept.length >= want) return [...held].sort();
  const keptSet = new Set(kept);
  const spares = (pool: Iterable<string>) =>
    [...pool].filter((b) => !keptSet.has(b)).sort((x, y) => fnv1a32(x, seed) - fnv1a32(y, seed) || (x < y ? -1 : 1));
  // Ideal members first; then any registered backend, when the ideal is mostly held already.
  for (const b of [...spares(ideal), ...spares(now)]) {
    if (kept.length >= want) break;
    if (!keptSet.has(b)) {
      kept.push(b);
      keptSet.add(b);
    }
  }
  return kept.sort();
}

/**
 * Channel options the etcd resolver reads. SUBSET_SIZE_OPTION (a number):
 * N >= 1 hands grpc-js N backends of the registry; 0 turns subsetting off
 * (every registered backend); unset is the default, `auto`: every backend
 * while the registry holds at most AUTO_SUBSET_ABOVE of them, then a subset
 * that shrinks by one per backend beyond that down to AUTO_SUBSET_SIZE
 * (subset-auto.ts). Who this client is among the others, CLIENT_ID_OPTION:
 * - a number, 0..MAX_CLIENT_ID: that id, SRE subsets (subsetFor), nothing
 *   written to etcd: as before the membership ranks existed;
 * - `'hash'`: defaultClientId() (host name and pid), nothing written;
 * - unset: the client's rank among the live subsetting clients of the
 *   service, kept in etcd under MEMBERS_ROOT (subset-members.ts), on the
 *   aperture ring (subset-aperture.ts); defaultClientId() where the etcd
 *   role may not write there.
 */
export const SUBSET_SIZE_OPTION = 'etcd_mesh.subset_size';
/** This client's id for subsetting (a number, 0..MAX_CLIENT_ID, or `'hash'`); see SUBSET_SIZE_OPTION. */
export const CLIENT_ID_OPTION = 'etcd_mesh.client_id';
/** CLIENT_ID_OPTION's value for "a hash of host name and pid, no membership key". */
export const HASHED_CLIENT_ID = 'hash';

/**
 * Registries larger than this are subset by default. Below it a client's
 * connections cost little (a few MB and ms/s idle each dozen); at 1,000
 * backends a full mesh cost one client 65 MB, 2-3x the idle CPU and about a
 * third of its throughput on the scale bench (docs/scale.md), and M clients
 * hold M x S connections.
 */
export const AUTO_SUBSET_ABOVE = 100;
/** The subset size `auto` uses over a large registry: about what --subset 10 measured, with room for ejections. */
export const AUTO_SUBSET_SIZE = 20;

/** What a channel's options ask for: `size` backends (auto: the taper of subset-auto.ts), or undefined for every backend. */
export interface SubsetChoice {
  size: number;
  /** The id used when not ranked by membership: the one given, else defaultClientId(). */
  clientId: number;
  auto: boolean;
  /** Rank by etcd membership (no id given): see SUBSET_SIZE_OPTION. */
  members: boolean;
}

/** The subsetting a channel's options ask for (see SUBSET_SIZE_OPTION), or undefined when it is off. */
export function subsetOptionsOf(options: Record<string, unknown>): SubsetChoice | undefined {
  const size = options[SUBSET_SIZE_OPTION];
  const id = options[CLIENT_ID_OPTION];
  const given = typeof id === 'number' && Number.isInteger(id) && id >= 0 && id <= MAX_CLIENT_ID;
  const clientId = given ? id : defaultClientId();
  // Ranks only when no id was given at all: an id out of range (an unmasked
  // hash, say) still means "I chose my id", so it falls back to the hashed one.
  const members = id === undefined;
  if (size === undefined) return { size: AUTO_SUBSET_SIZE, clientId, auto: true, members };
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1) return undefined;
  return { size, clientId, auto: false, members };
}
