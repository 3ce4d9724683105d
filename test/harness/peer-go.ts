import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { REPO } from './mesh-process';
import { ensureDebianPackages, type PeerAvailability } from './peer-debian';

const execFileP = promisify(execFile);

/** Debian's Go source tree (GOPATH mode): etcd's client and naming packages, grpc-go. */
export const DEBIAN_GOPATH = '/usr/share/gocode';
/** etcd's own Go naming packages as Debian ships them (etcd 3.4 layout, clientv3/). */
const ETCD_NAMING = path.join(DEBIAN_GOPATH, 'src', 'go.etcd.io', 'etcd', 'clientv3', 'naming');
const BUILD = path.join(REPO, 'scripts', 'build-go-peers.sh');

export interface GoPeers {
  /** test/peers/go/greeter-server, built. */
  server: string;
  /** test/peers/go/greeter-client, built. */
  client: string;
  /** test/peers/go/fleet and wide-client: the Go side of the scale bench (bench/scale-fleet-go.ts). */
  fleet: string;
  wideClient: string;
  /** Wall time of the build in this run (0 when taken from the cache). */
  buildMs: number;
  cached: boolean;
}

function goPresent(): boolean {
  return (
    spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0 &&
    existsSync(path.join(ETCD_NAMING, 'resolver')) &&
    existsSync(path.join(ETCD_NAMING, 'endpoints')) &&
    existsSync(path.join(DEBIAN_GOPATH, 'src', 'google.golang.org', 'grpc'))
  );
}

/** golang-go, golang-etcd-server-dev, golang-google-grpc-dev present (installed now if missing), or why not. */
export function ensureGoToolchain(): Promise<PeerAvailability> {
  return ensureDebianPackages(['golang-go', 'golang-etcd-server-dev', 'golang-google-grpc-dev'], goPresent);
}

/**
 * The Go peers, built once by scripts/build-go-peers.sh (the test set-up runs
 * it before vitest; a single file run on its own builds them here, the same
 * way), cached under .tmp/go-peers/<hash of sources and Go version>/.
 */
export async function buildGoPeers(): Promise<GoPeers> {
  const t0 = Date.now();
  const cachedBefore = spawnSync('bash', [BUILD, '--check'], { encoding: 'utf8' }).status === 0;
  const { stdout } = await execFileP('bash', [BUILD], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
  const dir = stdout.trim().split('\n').pop()!;
  return { server: path.join(dir, 'greeter-server'), client: path.join(dir, 'greeter-client'), fleet: path.join(dir, 'fleet'), wideClient: path.join(dir, 'wide-client'), buildMs: cachedBefore ? 0 : Date.now() - t0, cached: cachedBefore };
}
