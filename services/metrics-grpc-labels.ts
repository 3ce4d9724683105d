/**
 * Labels as go-grpc-prometheus spells them, so dashboards built for Go
 * services read ours unchanged: `grpc_type` unary | client_stream |
 * server_stream | bidi_stream, `grpc_service` the fully-qualified service,
 * `grpc_method` the bare method, `grpc_code` Go's codes.Code.String().
 */
export const GRPC_LABELS = ['grpc_type', 'grpc_service', 'grpc_method'] as const;
export const GRPC_LABELS_CODE = [...GRPC_LABELS, 'grpc_code'] as const;

/** Default buckets of go-grpc-prometheus (prometheus.DefBuckets), seconds. */
export const GRPC_HANDLING_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const GO_CODE_NAMES: Record<number, string> = {
  0: 'OK', 1: 'Canceled', 2: 'Unknown', 3: 'InvalidArgument', 4: 'DeadlineExceeded', 5: 'NotFound', 6: 'AlreadyExists', 7: 'PermissionDenied',
  8: 'ResourceExhausted', 9: 'FailedPrecondition', 10: 'Aborted', 11: 'OutOfRange', 12: 'Unimplemented', 13: 'Internal', 14: 'Unavailable',
  15: 'DataLoss', 16: 'Unauthenticated',
};

/** Go's name of a status code (`Code(n)` for unknown numbers, as Go prints them). */
export function grpcCodeName(code: number): string {
  return GO_CODE_NAMES[code] ?? `Code(${code})`;
}

export type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

export function grpcType(requestStream: boolean, responseStream: boolean): GrpcType {
  if (!requestStream && !responseStream) return 'unary';
  if (requestStream && !responseStream) return 'client_stream';
  if (!requestStream && responseStream) return 'server_stream';
  return 'bidi_stream';
}

/** `/pkg.Service/Method` into its service and method (the path itself as service when malformed). */
export function splitMethodPath(path: string): { service: string; method: string } {
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return m ? { service: m[1], method: m[2] } : { service: path, method: '' };
}

