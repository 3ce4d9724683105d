import { spawn } from 'node:child_process';
import type { EtcdCluster } from './etcd-cluster';

/**
 * A backend registered by etcdctl alone, the way a non-mesh service (or an
 * operator) does it: `lease grant`, `put --lease` of Go's endpoints format
 * with Metadata null, and `lease keep-alive` running beside it.
 */
export class EtcdctlRegistration {
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly etcd: EtcdCluster,
    readonly key: string,
    readonly leaseId: string,
    private readonly keepAlive: ReturnType<typeof spawn>,
  ) {}

  static async register(etcd: EtcdCluster, key: string, addr: string, ttlSeconds = 10): Promise<EtcdctlRegistration> {
    const { stdout } = await etcd.etcdctl(['lease', 'grant', String(ttlSeconds)]);
    const m = /lease ([0-9a-f]+) granted/.exec(stdout);
    if (!m) throw new Error(`etcdctl lease grant: unexpected output ${JSON.stringify(stdout)}`);
    const leaseId = m[1];
    await etcd.etcdctl(['put', `--lease=${leaseId}`, key, JSON.stringify({ Op: 0, Addr: addr, Metadata: null })]);
    const keepAlive = spawn('etcdctl', [`--endpoints=${etcd.endpoints}`, 'lease', 'keep-alive', leaseId], {
      env: { ...process.env, ETCDCTL_API: '3' },
      stdio: 'ignore',
    });
    return new EtcdctlRegistration(etcd, key, leaseId, keepAlive);
  }

  /** Stop the keep-alive and revoke the lease (the key goes with it). Idempotent. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = (async () => {
        if (this.keepAlive.exitCode === null) {
          const gone = new Promise((r) => this.keepAlive.once('close', r));
          this.keepAlive.kill('SIGTERM');
          await gone;
        }
        await this.etcd.etcdctl(['lease', 'revoke', this.leaseId]).catch(() => undefined);
      })();
    }
    return this.closed;
  }
}
