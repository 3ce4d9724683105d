import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** `proto/greeter.proto`, found both from the TypeScript sources (vitest) and from dist/. */
export const GREETER_PROTO = [path.resolve(__dirname, '..', 'proto', 'greeter.proto'), path.resolve(__dirname, '..', '..', 'proto', 'greeter.proto')].find(
  (p) => existsSync(p),
) as string;

/** Fully-qualified service name, for service configs. */
export const GREETER_SERVICE = 'helloworld.Greeter';

export interface HelloRequest {
  name: string;
}
export interface HelloReply {
  message: string;
}

export interface GreeterClient extends grpc.Client {
  sayHello(req: HelloRequest, metadata: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: HelloReply) => void): grpc.ClientUnaryCall;
}

type GreeterClientCtor = new (target: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => GreeterClient;

let loaded: { Greeter: GreeterClientCtor & { service: grpc.ServiceDefinition } } | undefined;
let definition: protoLoader.PackageDefinition | undefined;

/** proto/greeter.proto as proto-loader loads it (for server reflection and the health service's names). */
export function greeterPackageDefinition(): protoLoader.PackageDefinition {
  definition ??= protoLoader.loadSync(GREETER_PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  return definition;
}

/** The generated Greeter client constructor and service definition. */
export function greeterPackage(): { Greeter: GreeterClientCtor & { service: grpc.ServiceDefinition } } {
  if (!loaded) {
    const pkg = grpc.loadPackageDefinition(greeterPackageDefinition()) as unknown as { helloworld: typeof loaded };
    loaded = pkg.helloworld;
  }
  return loaded!;
}
