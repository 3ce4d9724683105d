import { afterAll, beforeAll } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { LocalEtcdCluster } from '../../demo/etcd-local';
import { createEtcdClient } from '../../core/etcd-client';
import { MeshProcess } from './mesh-process';

// Tests run against the same local etcd cluster the demo and the bench start.
export { LocalEtcdCluster as EtcdCluster, type EtcdMember } from '../../demo/etcd-local';

/** A test file's etcd: a real cluster on free loopback ports, and a client to it. */
export interface TestEtcd {
  etcd: LocalEtcdCluster;
  client: Etcd3;
}

/** Start a real `size`-member etcd and a client to it (call from beforeAll). */
export async function startTestEtcd(size = 1): Promise<TestEtcd> {
  const etcd = await LocalEtcdCluster.start(size);
  return { etcd, client: createEtcdClient({ endpoints: etcd.members.map((m) => m.endpoint) }) };
}

/**
 * A describe's (or file's) own etcd: started in beforeAll, stopped in
 * afterAll after `extra` (what the tests opened on it). The object is
 * filled in by beforeAll, so read its fields inside tests and hooks.
 */
export function useTestEtcd(size = 1, extra?: () => unknown): Partial<TestEtcd> {
  const t: Partial<TestEtcd> = {};
  beforeAll(async () => {
    Object.assign(t, await startTestEtcd(size));
  }, 30_000);
  afterAll(() => stopTestEtcd(t, extra), 30_000);
  return t;
}

/**
 * Undo startTestEtcd (call from afterAll): every mesh process the file
 * started, then the file's own leftovers (`extra`), the client, etcd and its
 * data dirs. Safe when start-up failed half-way.
 */
export async function stopTestEtcd(t: Partial<TestEtcd>, extra?: () => unknown): Promise<void> {
  await MeshProcess.killAll();
  await extra?.();
  t.client?.close();
  await t.etcd?.stop();
}
