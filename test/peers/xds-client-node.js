'use strict';
/**
 * A helloworld client on @grpc/grpc-js with @grpc/grpc-js-xds registered:
 * grpc-js-xds's own xDS resolver and balancers resolve the xds:/// target,
 * configured by the control plane named in GRPC_XDS_BOOTSTRAP. We wrote
 * nothing of the xDS side: this only makes calls and counts who answered.
 * Plain JavaScript, run as is by node: a program as a stranger writes it.
 *
 * Usage: node xds-client-node.js TARGET RATE CONCURRENCY DEADLINE_MS
 * stdout: the same JSON lines as xds_client.py (started, first, tick, error, done).
 */
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const xds = require('@grpc/grpc-js-xds');

xds.register();

const [target, rate, concurrency, deadlineMs] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5])];
const def = protoLoader.loadSync(path.join(__dirname, '..', '..', 'proto', 'greeter.proto'));
const { Greeter } = grpc.loadPackageDefinition(def).helloworld;
const client = new Greeter(target, grpc.credentials.createInsecure());

let windowOk = {};
let windowFailed = {};
let totalOk = 0;
let totalFailed = 0;
let errorsShown = 0;
const backends = {};
let stopping = false;

const emit = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const codeName = (code) => Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);

function callOnce() {
  return new Promise((resolve) => {
    client.sayHello({ name: 'xds' }, { deadline: Date.now() + deadlineMs }, (err, reply) => {
      if (err) {
        const code = codeName(err.code);
        windowFailed[code] = (windowFailed[code] || 0) + 1;
        totalFailed++;
        if (errorsShown++ < 20) emit({ event: 'error', code, details: err.details, t: Date.now() });
      } else {
        const backend = reply.message.split(' from ').pop();
        windowOk[backend] = (windowOk[backend] || 0) + 1;
        totalOk++;
        if (!(backend in backends)) emit({ event: 'first', backend, t: Date.now() });
        backends[backend] = (backends[backend] || 0) + 1;
      }
      resolve();
    });
  });
}

async function worker() {
  const period = (concurrency / rate) * 1000;
  let nextAt = performance.now();
  while (!stopping) {
    await callOnce();
    nextAt += period;
    const delay = nextAt - performance.now();
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    else nextAt = performance.now();
  }
}

const ticker = setInterval(() => {
  emit({ event: 'tick', t: Date.now(), ok: windowOk, failed: windowFailed });
  windowOk = {};
  windowFailed = {};
}, 200);

emit({ event: 'started', client: 'grpc-js-xds', version: require('@grpc/grpc-js-xds/package.json').version });
const workers = Array.from({ length: concurrency }, worker);
const stop = () => {
  if (stopping) return;
  stopping = true;
  void Promise.all(workers).then(() => {
    clearInterval(ticker);
    emit({ event: 'done', ok: totalOk, failed: totalFailed, backends });
    client.close();
    process.exit(0);
  });
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
