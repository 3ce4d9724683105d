import { MeshProcess, type LogLine } from '../../demo/mesh-process';

/** One JSON object a peer printed on a stdout line. */
export type PeerEvent = LogLine;

/**
 * A non-mesh peer (the Python C-core greeter, the Go greeter server or
 * client) whose stdout is one JSON event a line: the shared MeshProcess
 * running `cmd`, its events read from stdout. Configuration only: the
 * process is tracked (and killed after a file by stopTestEtcd's
 * MeshProcess.killAll) like every other child.
 */
export function peerProcess(cmd: string, args: string[], env: Record<string, string> = {}): MeshProcess {
  return new MeshProcess(args, env, { command: cmd, logsFrom: 'stdout' });
}
