import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO, type MeshProcess } from './mesh-process';
import { peerProcess } from './peer-process';
import { ensureDebianPackages, type PeerAvailability } from './peer-debian';

/**
 * Debian's interpreter, by full path: `python3` on PATH may be another one
 * (pyenv, a venv) that does not see Debian's python3-grpcio.
 */
export const DEBIAN_PYTHON = '/usr/bin/python3';
const SERVER = path.join(REPO, 'test', 'peers', 'greeter_server.py');

function grpcioPresent(): boolean {
  return spawnSync(DEBIAN_PYTHON, ['-c', 'import grpc'], { stdio: 'ignore' }).status === 0;
}

/** python3-grpcio present (installed now if missing), or why not. */
export function ensurePythonGrpc(): Promise<PeerAvailability> {
  return ensureDebianPackages(['python3', 'python3-grpcio'], grpcioPresent);
}

/**
 * test/peers/greeter_server.py: helloworld on gRPC's C core, default server
 * options. `peers` counts the connections that carried calls (one new
 * source port each), seen from the server.
 */
export class PythonGreeter {
  private constructor(
    readonly proc: MeshProcess,
    readonly addr: string,
  ) {}

  static async start(port: number): Promise<PythonGreeter> {
    const proc = peerProcess(DEBIAN_PYTHON, ['-u', SERVER, String(port)]);
    await proc.waitForLog('listening');
    return new PythonGreeter(proc, `127.0.0.1:${port}`);
  }

  /** Distinct client connections that made calls so far. */
  get peers(): string[] {
    return this.proc.logsNamed('peer').map((e) => String(e.peer));
  }

  stop(): Promise<void> {
    return this.proc.stop();
  }
}
