import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

/**
 * The client side of `grpc.health.v1.Health`, on grpc-health-check's own
 * definition of the proto (the package the servers use), so both ends read
 * the same file. Enums arrive as their names (proto-loader `enums: String`).
 */

/** What a server answers: SERVING, NOT_SERVING, UNKNOWN, or (Watch only) SERVICE_UNKNOWN. */
export type HealthStatusName = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

export interface HealthCheckRequest {
  service: string;
}

export interface HealthCheckResponse {
  status: HealthStatusName;
}

/** A generated `grpc.health.v1.Health` client (Check unary, Watch server-streaming). */
export interface HealthClient extends grpc.Client {
  Check(req: HealthCheckRequest, metadata: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: HealthCheckResponse) => void): grpc.ClientUnaryCall;
  Watch(req: HealthCheckRequest, metadata?: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<HealthCheckResponse>;
}

type HealthClientCtor = new (target: string, creds: grpc.ChannelCredentials, options?: grpc.ClientOptions) => HealthClient;

let ctor: HealthClientCtor | undefined;

/** The client constructor (built once). */
export function healthClientConstructor(): HealthClientCtor {
  ctor ??= grpc.makeClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'grpc.health.v1.Health') as unknown as HealthClientCtor;
  return ctor;
}

/** A health client on an existing channel (a subchannel's own, for the health-checking policy). */
export function healthClientOn(channel: grpc.ChannelInterface): HealthClient {
  return new (healthClientConstructor())('unused', grpc.credentials.createInsecure(), { channelOverride: channel });
}
