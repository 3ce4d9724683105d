import type { Etcd3 } from 'etcd3';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { addEtcdOptions, addServiceOptions, connectEtcd, UsageError, type EtcdFlags, type ServiceFlags } from './common';
import { intIn } from './parse';
import { AUTO_SUBSET_ABOVE, AUTO_SUBSET_SIZE, CLIENT_ID_OPTION, HASHED_CLIENT_ID, MAX_CLIENT_ID, SUBSET_SIZE_OPTION } from '../balancer/subset';
import { AUTO_SUBSET_FULL_AT } from '../balancer/subset-auto';
import { MEMBERS_ROOT, subsetMembersClosed } from '../balancer/subset-members';
import { addClientTlsOptions, clientCredentials, type ClientTlsFlags } from './tls';
import { addMetricsOption } from './metrics-flag';
import { meshTarget, openGreeterClient, type GreeterClient } from '../services/greeter-client';
import { servicePrefix } from '../balancer/endpoint-codec';
import { DEFAULT_LB, type LbPolicy } from '../balancer/channel';
import { LOAD_AWARE } from '../balancer/load-balancer-load-aware-config';
import { parseEjectionPercent, parseFailureCodes } from './parse';
import { DEFAULT_FAILURE_CODES } from '../balancer/failure-codes';
import type { LoadAwareOptions } from '../balancer/lb-policy-config';

/** Flags of a command that calls the greeters (`client`, `load`). */
export interface MeshClientFlags extends EtcdFlags, ServiceFlags, ClientTlsFlags {
  /** Any grpc-js target instead of the etcd resolver; then no etcd client is opened. */
  target?: string;
  /** Load-balancing policy (`--lb`); default the mesh's. */
  lb?: LbPolicy;
  /** `--subset N`: deterministic subsetting, N backends of the registry (balancer/subset.ts); 0: off; unset: auto. */
  subset?: number;
  /** `--client-id`: this client's index for subsetting, or `hash`; default its rank among the service's subsetting clients (etcd membership). */
  clientId?: number | typeof HASHED_CLIENT_ID;
  /** `--no-health-check` makes it false; on by default (gRPC A17 client-side health checking). */
  healthCheck?: boolean;
  /** `--health-service`: the service name each backend's health Watch asks about; default "" (the server as a whole). */
  healthService?: string;
  /** `--failure-codes`: status code names that count against a backend (load_aware). */
  failureCodes?: string[];
  /** `--max-ejection-percent`: at most this share of backends ejected at once (load_aware). */
  maxEjectionPercent?: number;
}

/**
 * What every command that calls the mesh takes after its own flags (client,
 * load), in this order (their --help lists them so): subsetting, health
 * checking, load_aware's failure handling, the registry and etcd, TLS, metrics.
 */
export function addMeshClientOptions(cmd: Command): Command {
  addSubsetOptions(cmd);
  addHealthCheckOptions(cmd);
  addFailureOptions(cmd);
  addEtcdOptions(addServiceOptions(cmd));
  addClientTlsOptions(cmd);
  addMetricsOption(cmd);
  return cmd;
}

/** `--no-health-check` and `--health-service`, shared by `client`, `load` and `demo`. */
export function addHealthCheckOptions(cmd: Command): Command {
  return cmd
    .option('--no-health-check', 'do not watch each backend\'s grpc.health.v1 status (on by default: a backend not SERVING gets no calls; never with --lb pick_first, as gRPC A17 says)')
    .addOption(new Option('--health-service <name>', 'service name the health Watch asks about (default "": the server as a whole, which every mesh server and standard health server reports)'));
}

/** The channel's health-checking config from those flags (undefined: off). */
export function healthCheckFromFlags(flags: { healthCheck?: boolean; healthService?: string; lb?: string }): { serviceName: string } | undefined {
  if (flags.healthCheck === false) {
    if (flags.healthService !== undefined) throw new UsageError('--health-service names what to health-check; --no-health-check turns health checking off');
    return undefined;
  }
  if (flags.lb === 'pick_first' && flags.healthService !== undefined) throw new UsageError('--lb pick_first does no health checking (gRPC A17); --health-service does not apply');
  return { serviceName: flags.healthService ?? '' };
}

/** `--failure-codes` and `--max-ejection-percent`, shared by `client`, `load` and `demo`: load_aware's failure handling. */
export function addFailureOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--failure-codes <codes>', `status codes that count against the backend that answered them, comma-separated, or none (load_aware; default ${DEFAULT_FAILURE_CODES.join(',')}, DEADLINE_EXCEEDED only when the backend was silent)`).argParser(parseFailureCodes))
    .addOption(new Option('--max-ejection-percent <p>', 'at most this share of the backends ejected at once, for failures or latency (load_aware; default 50: fewer than half)').argParser(parseEjectionPercent));
}

/**
 * The load_aware options the flags ask for; a UsageError (exit 2) when they
 * are given with another policy, which has no such settings.
 */
export function loadAwareOptionsOf(flags: { lb?: LbPolicy; failureCodes?: string[]; maxEjectionPercent?: number }): LoadAwareOptions | undefined {
  const given = [flags.failureCodes !== undefined && '--failure-codes', flags.maxEjectionPercent !== undefined && '--max-ejection-percent'].filter(Boolean);
  if (given.length === 0) return undefined;
  const lb = flags.lb ?? DEFAULT_LB;
  if (lb !== LOAD_AWARE) throw new UsageError(`${given.join(' and ')} set${given.length === 1 ? 's' : ''} the ${LOAD_AWARE} policy; --lb ${lb} has no such setting`);
  return { failureCodes: flags.failureCodes, maxEjectionPercent: flags.maxEjectionPercent };
}

/** `--subset` and `--client-id`, shared by `client` and `load`. */
export function addSubsetOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--subset <n>',
        `connect to only N of the registered backends, chosen by deterministic subsetting; 0: to every one (default: every one up to ${AUTO_SUBSET_ABOVE} registered, then one fewer per backend beyond, ${AUTO_SUBSET_SIZE} from ${AUTO_SUBSET_FULL_AT} registered on)`,
      ).argParser(intIn(0, 100_000)),
    )
    .addOption(
      new Option(
        '--client-id <id>',
        `this client's index for subsetting, 0..${MAX_CLIENT_ID} (dense ids 0..M-1 balance exactly), or "${HASHED_CLIENT_ID}" (a hash of host name and pid); default: its rank among the live subsetting clients of the service, kept under a lease in etcd at ${MEMBERS_ROOT}/<prefix>/<service>/ (a hash where the role may not write there)`,
      ).argParser(parseClientId),
    );
}

const parseClientIdNumber = intIn(0, MAX_CLIENT_ID);

/** `--client-id`: an integer 0..MAX_CLIENT_ID, or `hash`. */
function parseClientId(value: string): number | typeof HASHED_CLIENT_ID {
  if (value === HASHED_CLIENT_ID) return HASHED_CLIENT_ID;
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`${JSON.stringify(value)} is neither an integer nor "${HASHED_CLIENT_ID}"`);
  return parseClientIdNumber(value);
}

/** A Greeter client on the mesh channel, and the etcd client its resolver reads (none with --target). */
export interface MeshClient {
  target: string;
  greeter: GreeterClient;
  etcd: Etcd3 | undefined;
  /** The registry prefix the resolver watches (`<prefix>/<service>/`), undefined with --target. */
  registry: string | undefined;
  /** Close the channel, then the etcd client. Idempotent. */
  close(): void;
}

/**
 * Open the client the flags describe. Usage errors come first (bad
 * certificate files: UsageError, exit 2), then etcd must answer: the probe
 * reads the service's prefix, which is all a client's role needs
 * (CommandFailure naming why not). The etcd client becomes the resolver's
 * (services/greeter-client.ts openGreeterClient, which the demo uses too).
 */
export async function openMeshClient(flags: MeshClientFlags): Promise<MeshClient> {
  const target = flags.target ?? meshTarget(flags.prefix, flags.service);
  if (flags.target && flags.subset !== undefined) throw new UsageError('--subset picks from the etcd registry; it does not apply to --target');
  if (flags.target && flags.clientId !== undefined) throw new UsageError('--client-id picks a subset of the etcd registry; it does not apply to --target');
  if (flags.clientId !== undefined && flags.subset === 0) throw new UsageError('--client-id only matters when subsetting (--subset 0 turns it off)');
  const healthCheckConfig = healthCheckFromFlags(flags);
  const loadAware = loadAwareOptionsOf(flags);
  const tls = clientCredentials(flags, target);
  const registry = flags.target ? undefined : servicePrefix(flags.prefix, flags.service);
  const etcd = registry ? await connectEtcd(flags, undefined, { readPrefix: registry }) : undefined;
  const subsetOptions = { ...(flags.subset !== undefined ? { [SUBSET_SIZE_OPTION]: flags.subset } : {}), ...(flags.clientId !== undefined ? { [CLIENT_ID_OPTION]: flags.clientId } : {}) };
  const channel = openGreeterClient(target, etcd, { credentials: tls.credentials, options: { ...tls.options, ...subsetOptions }, config: { lb: flags.lb, healthCheckConfig, loadAware } });
  let closed = false;
  return {
    target,
    greeter: channel.greeter,
    etcd,
    registry,
    close() {
      if (closed) return;
      closed = true;
      channel.close();
      // A membership key (subsetting without --client-id) goes with its
      // lease: let the revoke land before etcd closes, or it stays a TTL.
      if (etcd) void subsetMembersClosed().finally(() => etcd.close());
    },
  };
}
