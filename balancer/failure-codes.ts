import * as grpc from '@grpc/grpc-js';

/**
 * Which statuses an attempt may end with that count against the backend
 * that answered it (the load_aware policy's failure ejection and its
 * traffic cut in proportion to failures, ejection-failures.ts), and which
 * never do. A documented, configurable table: `failureCodes` in the
 * load_aware service config, `--failure-codes` on the command line.
 *
 * Counted by default (the backend's fault):
 * - UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS: it could not serve the call.
 * - RESOURCE_EXHAUSTED: it is shedding load (our own client never sends
 *   messages over the limits, so the status is the server's).
 * - UNIMPLEMENTED: its peers serve the method and it does not (a
 *   mis-deployed version). Failures are judged against the peers' rate, so a
 *   method no backend implements (the caller's mistake) ejects nobody.
 * - DEADLINE_EXCEEDED, only when the backend answered nothing at all while
 *   the attempt ran (it stalled). A deadline that passes while the backend
 *   keeps answering other calls is the caller's choice of deadline.
 *
 * Never counted, whatever the table says: OK, and CANCELLED (the caller's
 * cancel, or the mesh's own hedging cancelling a losing attempt, which
 * says nothing of the backend). Not counted by default (the caller's own
 * fault): INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
 * UNAUTHENTICATED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE; a table may
 * add them. A transport reset the client itself provoked (INTERNAL
 * "Received RST_STREAM ... Session closed", channel-retry.ts
 * isTransportReset) is not an answer and never counts.
 */
export const DEFAULT_FAILURE_CODES = ['UNAVAILABLE', 'INTERNAL', 'UNKNOWN', 'DATA_LOSS', 'RESOURCE_EXHAUSTED', 'UNIMPLEMENTED', 'DEADLINE_EXCEEDED'] as const;

/** Names a table may not hold: they are never the backend's fault. */
const NEVER = new Set(['OK', 'CANCELLED']);

/** grpc.status by name: `INTERNAL` -> 13. */
const BY_NAME: ReadonlyMap<string, number> = new Map(
  Object.entries(grpc.status).filter((kv): kv is [string, number] => typeof kv[1] === 'number'),
);

/** A table that cannot be built; the message is one line naming the bad entry. */
export class BadFailureCodesError extends Error {}

/** The status codes that count against a backend (see DEFAULT_FAILURE_CODES). Immutable. */
export class FailureCodes {
  private constructor(
    private readonly codes: ReadonlySet<number>,
    /** The names, in the order given, upper case. */
    readonly names: readonly string[],
  ) {}

  static readonly DEFAULT = FailureCodes.of(DEFAULT_FAILURE_CODES);

  /** From names (any case). Throws BadFailureCodesError for an unknown name, OK or CANCELLED. An empty list counts nothing. */
  static of(names: readonly string[]): FailureCodes {
    const codes = new Set<number>();
    const seen: string[] = [];
    for (const raw of names) {
      const name = raw.trim().toUpperCase();
      const code = BY_NAME.get(name);
      if (code === undefined) throw new BadFailureCodesError(`unknown status code ${JSON.stringify(raw)}; status codes are ${[...BY_NAME.keys()].join(', ')}`);
      if (NEVER.has(name)) throw new BadFailureCodesError(`${name} cannot count as a backend failure (${name === 'OK' ? 'it is success' : 'the caller or the mesh\'s own hedging cancels calls'})`);
      if (!codes.has(code)) seen.push(name);
      codes.add(code);
    }
    return new FailureCodes(codes, seen);
  }

  /** `INTERNAL,UNKNOWN,...` as on the command line; `none` (or nothing) counts nothing. */
  static parse(text: string): FailureCodes {
    const t = text.trim();
    if (t === '' || t.toLowerCase() === 'none') return FailureCodes.of([]);
    const names = t.split(',');
    if (names.some((n) => n.trim() === '')) throw new BadFailureCodesError(`empty status code name in ${JSON.stringify(text)}`);
    return FailureCodes.of(names);
  }

  /**
   * Whether an attempt that ended with `code` counts against its backend.
   * `silent`: the backend answered nothing while the attempt ran (it is
   * what makes DEADLINE_EXCEEDED the backend's fault).
   */
  counts(code: number, silent: boolean): boolean {
    if (!this.codes.has(code)) return false;
    return code !== grpc.status.DEADLINE_EXCEEDED || silent;
  }

  get size(): number {
    return this.codes.size;
  }
}
