import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { REPO } from './mesh-process';
import { ensureDebianPackages, type PeerAvailability } from './peer-debian';

const execFileP = promisify(execFile);

/** Debian's Go source tree (GOPATH mode): etcd's client and naming packages, grpc-go. */
export const DEBIAN_GOPATH = '/usr/share/gocode';
/** etcd's own Go naming packages as Debian ships them (etcd 3.4 layout, clientv3/). */
const ETCD_NAMING = path.join(DEBIAN_GOPATH, 'src', 'go.etcd.io', 'etcd', 'clientv3', 'naming');
const SOURCES = path.join(REPO, 'test', 'peers', 'go');
const CACHE = path.join(REPO, '.tmp', 'go-peers');

export interface GoPeers {
  /** test/peers/go/greeter-server, built. */
  server: string;
  /** test/peers/go/greeter-client, built. */
  client: string;
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

function filesUnder(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((f) => {
      const p = path.join(dir, f);
      return statSync(p).isDirectory() ? filesUnder(p) : [p];
    });
}

/**
 * Build the Go peers once, cached under .tmp/go-peers/<hash>/ where the hash
 * covers their sources and the Go version (a cold build of etcd's client and
 * grpc-go takes a minute or two here; a cached one is free). GOPATH mode on
 * Debian's source tree: GO111MODULE=off, GOPATH=<temp>:/usr/share/gocode,
 * the sources copied to <temp>/src/meshpeers/. Go's build cache lives under
 * .tmp/ too, so a source change rebuilds only the peers.
 */
export async function buildGoPeers(): Promise<GoPeers> {
  const goVersion = spawnSync('go', ['version'], { encoding: 'utf8' }).stdout.trim();
  const hash = createHash('sha256').update(goVersion);
  for (const f of filesUnder(SOURCES)) hash.update(path.relative(SOURCES, f)).update('\0').update(readFileSync(f)).update('\0');
  const dir = path.join(CACHE, hash.digest('hex').slice(0, 16));
  const result = (buildMs: number, cached: boolean): GoPeers => ({ server: path.join(dir, 'greeter-server'), client: path.join(dir, 'greeter-client'), buildMs, cached });
  if (existsSync(path.join(dir, 'greeter-server')) && existsSync(path.join(dir, 'greeter-client'))) return result(0, true);

  const t0 = Date.now();
  const gopath = mkdtempSync(path.join(os.tmpdir(), 'mesh-gopath-'));
  try {
    cpSync(SOURCES, path.join(gopath, 'src', 'meshpeers'), { recursive: true });
    const out = path.join(gopath, 'bin');
    mkdirSync(out);
    mkdirSync(path.join(REPO, '.tmp', 'go-build-cache'), { recursive: true });
    await execFileP('go', ['build', '-o', out + path.sep, 'meshpeers/greeter-server', 'meshpeers/greeter-client'], {
      cwd: gopath,
      env: {
        ...process.env,
        GO111MODULE: 'off',
        GOPATH: `${gopath}${path.delimiter}${DEBIAN_GOPATH}`,
        GOCACHE: path.join(REPO, '.tmp', 'go-build-cache'),
        GOFLAGS: '',
      },
      timeout: 600_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    mkdirSync(CACHE, { recursive: true });
    // Built aside and renamed into place, so a half-written cache entry never exists.
    rmSync(dir, { recursive: true, force: true });
    renameSync(out, dir);
  } finally {
    rmSync(gopath, { recursive: true, force: true });
  }
  return result(Date.now() - t0, false);
}
