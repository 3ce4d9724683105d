import * as grpc from '@grpc/grpc-js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { CommandFailure } from './common';
import { parsePositiveDuration } from './parse';
import { addClientTlsOptions, clientCredentials, type ClientTlsFlags } from './tls';
import { isHostPort } from '../balancer/endpoint-codec';
import { healthClientConstructor, type HealthClient, type HealthCheckResponse } from '../balancer/health-check-proto';

/**
 * `mesh health HOST:PORT [--service S] [--watch] [--timeout 1s]`: a
 * grpc_health_probe for one server, over `grpc.health.v1.Health`.
 *
 * Check: one line, exit 0 when SERVING. The answered status goes to stdout
 * (`SERVING`, `NOT_SERVING`, `UNKNOWN`); anything else is one `mesh: ...`
 * line on stderr saying which: unreachable, no answer in time, service
 * unknown to the server (NOT_FOUND), no health service (UNIMPLEMENTED).
 * Every failure exits 1; usage errors exit 2.
 *
 * --watch: a Watch call; each status as it comes, `<ISO time> <STATUS>` on
 * stdout (SERVICE_UNKNOWN included: the protocol keeps the stream open for a
 * service that may appear). `--timeout` bounds the first answer. It ends
 * when the server ends the stream (exit 1, one line why) or on Ctrl-C (exit
 * 0 if the last status was SERVING, else 1).
 */

interface HealthFlags extends ClientTlsFlags {
  service: string;
  watch: boolean;
  timeout: number;
}

function hostPortArg(value: string): string {
  if (!isHostPort(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} is not HOST:PORT (an IPv6 host in brackets: [::1]:50051)`);
  return value;
}

export function healthCommand(): Command {
  const cmd = new Command('health')
    .description("ask a server's grpc.health.v1.Health, as grpc_health_probe does: exit 0 SERVING, 1 NOT_SERVING or unreachable (one line says which), 2 usage")
    .argument('<host:port>', 'the server', hostPortArg)
    .addOption(new Option('--service <name>', 'service to ask about ("" is the server as a whole)').default(''))
    .option('--watch', 'keep watching: print each status change as it comes', false)
    .addOption(new Option('--timeout <duration>', 'deadline of the check (connecting included); with --watch, of the first answer').default(1000, '1s').argParser(parsePositiveDuration));
  addClientTlsOptions(cmd);
  return cmd.action(async (addr: string, flags: HealthFlags) => {
    const tls = clientCredentials(flags, addr);
    const client = new (healthClientConstructor())(addr, tls.credentials, tls.options);
    try {
      if (flags.watch) await watch(client, addr, flags);
      else await check(client, addr, flags);
    } finally {
      client.close();
    }
  });
}

/** Why a call failed, as one line naming the server. */
function failure(err: grpc.ServiceError, addr: string, flags: HealthFlags): CommandFailure {
  const svc = JSON.stringify(flags.service);
  switch (err.code) {
    case grpc.status.NOT_FOUND:
      return new CommandFailure(`${addr} does not know service ${svc} (NOT_FOUND)`);
    case grpc.status.UNIMPLEMENTED:
      return new CommandFailure(`${addr} does not serve grpc.health.v1.Health (UNIMPLEMENTED)`);
    case grpc.status.DEADLINE_EXCEEDED:
      return new CommandFailure(`${addr}: no answer within ${flags.timeout} ms (DEADLINE_EXCEEDED)`);
    case grpc.status.UNAVAILABLE:
      // grpc-js appends an empty "Resolution note:" for a plain host:port; it says nothing here.
      return new CommandFailure(`${addr} unreachable: ${err.details.replace(/\.? Resolution note: *$/, '')} (UNAVAILABLE)`);
    default:
      return new CommandFailure(`${addr}: health check failed: ${err.details} (${grpc.status[err.code] ?? err.code})`);
  }
}

async function check(client: HealthClient, addr: string, flags: HealthFlags): Promise<void> {
  const res = await new Promise<HealthCheckResponse>((resolve, reject) =>
    client.Check({ service: flags.service }, new grpc.Metadata(), { deadline: Date.now() + flags.timeout }, (err, r) => (err ? reject(failure(err, addr, flags)) : resolve(r!))),
  );
  process.stdout.write(`${res.status}\n`);
  if (res.status !== 'SERVING') process.exitCode = 1;
}

async function watch(client: HealthClient, addr: string, flags: HealthFlags): Promise<void> {
  const call = client.Watch({ service: flags.service });
  let last: string | undefined;
  let interrupted = false;
  let timedOut = false;
  // No deadline on the stream itself (it lives until Ctrl-C): the timeout is on its first answer.
  const first = setTimeout(() => {
    timedOut = true;
    call.cancel();
  }, flags.timeout);
  const onSignal = () => {
    interrupted = true;
    call.cancel();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await new Promise<void>((resolve, reject) => {
      call.on('data', (res: HealthCheckResponse) => {
        clearTimeout(first);
        if (res.status !== last) process.stdout.write(`${new Date().toISOString()} ${res.status}\n`);
        last = res.status;
      });
      call.on('error', (err: grpc.ServiceError) => {
        if (interrupted) return resolve();
        if (timedOut) return reject(new CommandFailure(`${addr}: no answer within ${flags.timeout} ms`));
        reject(last === undefined ? failure(err, addr, flags) : new CommandFailure(`${addr}: watch ended: ${err.details} (${grpc.status[err.code] ?? err.code}); last status ${last}`));
      });
      call.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) reject(new CommandFailure(`${addr}: the server ended the watch; last status ${last ?? 'none'}`));
      });
    });
  } finally {
    clearTimeout(first);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (last !== 'SERVING') process.exitCode = 1;
}
