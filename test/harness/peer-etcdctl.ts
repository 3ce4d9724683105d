import type { EtcdCluster } from './etcd-cluster';
import { MeshProcess } from './mesh-process';

/**
 * A backend registered by etcdctl alone, the way a non-mesh service (or an
 * operator) does it: `lease grant`, `put --lease` of Go's endpoints format
 * with Metadata null, and `lease keep-alive` running beside it (a tracked
 * MeshProcess, so a file that never closes it still leaves nothing running).
 */
export class EtcdctlRegistration {
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly etcd: EtcdCluster,
    readonly key: string,
    readonly leaseId: string,
    private readonly keepAlive: MeshProcess,
  ) {}

  static async register(etcd: EtcdCluster, key: string, addr: string, ttlSeconds = 10): Promise<EtcdctlRegistration> {
    const { stdout } = await etcd.etcdctl(['lease', 'grant', String(ttlSeconds)]);
    const m = /lease ([0-9a-f]+) granted/.exec(stdout);
    if (!m) throw new Error(`etcdctl lease grant: unexpected output ${JSON.stringify(stdout)}`);
    const leaseId = m[1];
    await etcd.etcdctl(['put', `--lease=${leaseId}`, key, JSON.stringify({ Op: 0, Addr: addr, Metadata: null })]);
    const keepAlive = new MeshProcess([`--endpoints=${etcd.endpoints}`, 'lease', 'keep-alive', leaseId], { ETCDCTL_API: '3' }, { command: 'etcdctl', stdout: 'ignore' });
    return new EtcdctlRegistration(etcd, key, leaseId, keepAlive);
  }

  /** Stop the keep-alive and revoke the lease (the key goes with it). Idempotent. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = (async () => {
        await this.keepAlive.stop();
        await this.etcd.etcdctl(['lease', 'revoke', this.leaseId]).catch(() => undefined);
      })();
    }
    return this.closed;
  }
}
