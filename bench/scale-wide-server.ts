/**
 * Many real greeter ports in one process (forked by bench/scale-wide.ts):
 * one grpc-js Server bound to N loopback ports, every port registered in
 * etcd under one lease (LeaseRegistrationGroup). Stands for N backends on a
 * machine that cannot run N processes; the client side is what is measured.
 *
 * Requests: {id, cmd: 'start', endpoints, prefix, service, count} → {ports};
 * {id, cmd: 'served'} → {served, connections} since the last ask; {id, cmd: 'stop'}.
 */
import * as grpc from '@grpc/grpc-js';
import type { Etcd3 } from 'etcd3';
import { greeterPackage, type HelloReply, type HelloRequest } from '../services/greeter-proto';
import { createEtcdClient } from '../core/etcd-client';
import { LeaseRegistrationGroup } from '../balancer/registration-group';
import { serveFleetCalls } from './scale-fleet-process';

const server = new grpc.Server();
let served = 0;
/** Client connections (peer addresses) that carried a call since the last `served`: how many backends a client really spread over. */
let peers = new Set<string>();
server.addService(greeterPackage().Greeter.service, {
  SayHello: (call: grpc.ServerUnaryCall<HelloRequest, HelloReply>, cb: grpc.sendUnaryData<HelloReply>) => {
    served++;
    peers.add(call.getPeer());
    cb(null, { message: `Hello ${call.request.name || 'world'} from scale-wide` });
  },
});
const groups: LeaseRegistrationGroup[] = [];
let client: Etcd3 | undefined;

function bind(): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
}

async function start(r: { endpoints: string[]; prefix: string; service: string; count: number }): Promise<{ ports: number[] }> {
  const ports: number[] = [];
  for (let i = 0; i < r.count; i++) ports.push(await bind());
  client ??= createEtcdClient({ endpoints: r.endpoints });
  const g = new LeaseRegistrationGroup(client, { prefix: r.prefix, service: r.service, ttlSeconds: 10, members: ports.map((p) => ({ addr: `127.0.0.1:${p}` })) });
  groups.push(g);
  await g.start();
  return { ports };
}

async function handle(req: { id: number; cmd: string; [k: string]: unknown }): Promise<unknown> {
  switch (req.cmd) {
    case 'start':
      return start(req as unknown as { endpoints: string[]; prefix: string; service: string; count: number });
    case 'served': {
      // Calls served and distinct client connections that carried one, since the last ask.
      const r = { served, connections: peers.size };
      served = 0;
      peers = new Set();
      return r;
    }
    case 'stop':
      await Promise.race([Promise.all(groups.map((g) => g.close())), new Promise((r) => setTimeout(r, 3_000))]);
      client?.close();
      server.forceShutdown();
      setTimeout(() => process.exit(0), 10);
      return 'bye';
    default:
      throw new Error(`unknown command ${req.cmd}`);
  }
}

serveFleetCalls(handle);
