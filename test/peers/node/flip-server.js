// A greeter written as a user of the library would write it (plain
// JavaScript on the built package): its own grpc-js Server, served by
// serveAndRegister, and declared NOT_SERVING / SERVING by its owner
// (SIGUSR1 / SIGUSR2 stand in for a dependency going down and coming back).
//
//   node flip-server.js --port P [--etcd HOST:PORT --prefix P]   (no --etcd: not registered)
//
// stdout, one JSON object a line:
//   {"event":"serving","addr":"127.0.0.1:P"}
//   {"event":"health","serving":false,"calls":N,"lastCallMs":T,"atMs":T}   on each flip
//   {"event":"stopped","calls":N}                                          after a drain (SIGTERM)
'use strict';
const grpc = require('@grpc/grpc-js');
const { createEtcdClient, greeterPackage, serveAndRegister, GREETER_SERVICE } = require('../../../dist/index.js');

const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const emit = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function main() {
  const port = Number(arg('--port', '0'));
  const etcdAt = arg('--etcd');
  const etcd = etcdAt ? createEtcdClient({ endpoints: etcdAt.split(',') }) : undefined;
  let calls = 0;
  let lastCall = 0;
  let addr = '';
  const server = new grpc.Server();
  server.addService(greeterPackage().Greeter.service, {
    SayHello: (call, reply) => {
      calls++;
      lastCall = Date.now();
      reply(null, { message: `Hello ${call.request.name || 'world'} from ${addr}` });
    },
  });
  const mesh = await serveAndRegister(server, {
    host: '127.0.0.1',
    port,
    etcd,
    prefix: arg('--prefix', 'services'),
    service: 'greeter',
    ttlSeconds: 5,
    services: [GREETER_SERVICE],
    signals: {
      onDrained: () => {
        emit({ event: 'stopped', calls });
        etcd?.close();
      },
    },
  });
  addr = mesh.addr;
  const flip = (serving) => {
    const at = Date.now();
    mesh.setServing(serving, serving ? 'SIGUSR2: dependency back' : 'SIGUSR1: dependency down');
    emit({ event: 'health', serving, calls, lastCallMs: lastCall, atMs: at });
  };
  process.on('SIGUSR1', () => flip(false));
  process.on('SIGUSR2', () => flip(true));
  emit({ event: 'serving', addr });
}

main().catch((err) => {
  process.stderr.write(`flip-server: ${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
});
