/**
 * The Go side of the scale bench: the programs of test/peers/go/fleet and
 * test/peers/go/wide-client (etcd's own clientv3, naming/endpoints Manager
 * and naming/resolver, grpc-go, all from Debian's packages in GOPATH mode),
 * built by scripts/build-go-peers.sh (cached under .tmp/go-peers/), and the
 * handle the herd drives a Go fleet process through: the same requests and
 * report as a FleetProcess (bench/scale-fleet.ts), over HTTP instead of IPC.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { MeshProcess } from '../demo/mesh-process';
import type { FleetCall } from './scale-fleet';

const execFileP = promisify(execFile);

/** The repository: this file runs built, from dist/bench/. */
const REPO = path.resolve(__dirname, path.extname(__filename) === '.ts' ? '..' : '../..');

export interface GoScaleBinaries {
  fleet: string;
  wideClient: string;
  /** Wall time of the build in this run (0 when cached). */
  buildMs: number;
}

/**
 * Build (or take from the cache) the Go fleet and wide client; a string
 * says why they are not available (no Go toolchain or Debian's etcd/grpc-go
 * sources: scripts/setup.sh installs them).
 */
export async function goScaleBinaries(): Promise<GoScaleBinaries | string> {
  if (spawnSync('go', ['version'], { stdio: 'ignore' }).status !== 0) return 'no go toolchain (golang-go; scripts/setup.sh installs it)';
  for (const dir of ['go.etcd.io/etcd/clientv3/naming/resolver', 'go.etcd.io/etcd/clientv3/naming/endpoints', 'google.golang.org/grpc/resolver']) {
    if (!existsSync(path.join('/usr/share/gocode/src', dir))) return `Debian's Go sources missing: /usr/share/gocode/src/${dir} (golang-etcd-server-dev, golang-google-grpc-dev)`;
  }
  const script = path.join(REPO, 'scripts', 'build-go-peers.sh');
  const t0 = Date.now();
  const cached = spawnSync('bash', [script, '--check'], { stdio: 'ignore' }).status === 0;
  try {
    const { stdout } = await execFileP('bash', [script], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
    const dir = stdout.trim().split('\n').pop()!;
    return { fleet: path.join(dir, 'fleet'), wideClient: path.join(dir, 'wide-client'), buildMs: cached ? 0 : Date.now() - t0 };
  } catch (err) {
    return `scripts/build-go-peers.sh failed: ${String(err).split('\n').slice(0, 3).join(' ')}`;
  }
}

/** What a herd drives a fleet process through, Node (FleetProcess) or Go (GoFleetProcess). */
export interface FleetHandle {
  call<T>(req: FleetCall, timeoutMs?: number): Promise<T>;
  stop(): Promise<void>;
}

/** One process of the Go fleet (test/peers/go/fleet), driven over HTTP on loopback. */
export class GoFleetProcess implements FleetHandle {
  private readonly mesh: MeshProcess;
  private readonly addr: Promise<string>;

  constructor(binary: string) {
    // Its stdout is one JSON line (where it listens); stderr (errors only) where the bench's goes.
    this.mesh = new MeshProcess([], { GOGC: process.env.GOGC }, { command: binary, logsFrom: 'stdout', stderr: 'inherit' });
    this.addr = this.mesh.waitForLog('listening', {}, 30_000).then((l) => String(l.addr));
  }

  async call<T>(req: FleetCall, timeoutMs = 60_000): Promise<T> {
    const addr = await this.addr;
    const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
    const body = JSON.stringify(req);
    const reply = await new Promise<{ result?: T; error?: string }>((resolve, reject) => {
      const r = http.request({ host, port, path: '/call', method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(text) as { result?: T; error?: string });
          } catch (err) {
            reject(new Error(`go fleet: bad reply to ${req.cmd}: ${String(err)}`));
          }
        });
        res.on('error', reject);
      });
      const t = setTimeout(() => r.destroy(new Error(`go fleet: ${req.cmd} timed out`)), timeoutMs);
      r.on('close', () => clearTimeout(t));
      r.on('error', reject);
      r.end(body);
    });
    if (reply.error !== undefined) throw new Error(`go fleet: ${reply.error}`);
    return reply.result as T;
  }

  /** Ask it to stop (revokes its leases, exits); SIGKILL if it has not exited 3 s after that. */
  async stop(): Promise<void> {
    if (this.mesh.running) await this.call({ cmd: 'stop' }, 6_000).catch(() => undefined);
    const t = setTimeout(() => this.mesh.kill('SIGKILL'), 3_000);
    await this.mesh.exited;
    clearTimeout(t);
  }
}
