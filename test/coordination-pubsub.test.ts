import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { EtcdCluster } from './harness/etcd-cluster';
import { MeshProcess, runMesh } from './harness/mesh-process';
import { TcpProxy } from './harness/tcp-proxy';
import { waitFor } from './harness/ports';
import { createEtcdClient } from '../core/etcd-client';
import { publish, Subscription, type Message } from '../coordination/pubsub';
import { CompactedError } from '../core/etcd-errors';

let etcd: EtcdCluster;
let client: Etcd3;
let proxy: TcpProxy;

beforeAll(async () => {
  etcd = await EtcdCluster.start(1);
  client = createEtcdClient({ endpoints: [etcd.endpoints] });
  const [host, port] = etcd.members[0].endpoint.split(':');
  proxy = await TcpProxy.start(host, Number(port));
});

afterAll(async () => {
  await MeshProcess.killAll();
  await proxy?.close();
  client?.close();
  await etcd?.stop();
});

const range = (from: number, to: number, label: string) => Array.from({ length: to - from + 1 }, (_, i) => `${label} ${from + i}`);

/** The exit of a process that must end by itself within `ms` (else: what it printed so far, as a failure). */

async function publishAll(topic: string, messages: string[]): Promise<string[]> {
  const revs: string[] = [];
  for (const m of messages) revs.push((await publish(client, topic, m)).revision);
  return revs;
}

describe('mesh pub / mesh sub', () => {
  it('a subscriber whose stream is cut twice prints every message once, in publish order', async () => {
    const sub = new MeshProcess(['sub', 'orders', '--etcd', proxy.endpoint, '--count', '60']);
    await sub.waitForLog('watch.state', { to: 'WATCHING' });
    await publishAll('orders', range(1, 20, 'msg'));
    await waitFor('first messages', () => sub.stdout.length >= 5, 15_000);
    // Mid-stream: some of the first 20 are printed, the rest are in flight.
    expect(proxy.cut()).toBeGreaterThan(0);
    await publishAll('orders', range(21, 40, 'msg'));
    await waitFor('resumed after the first cut', () => sub.stdout.length >= 25, 20_000);
    proxy.cut();
    await publishAll('orders', range(41, 60, 'msg'));
    expect(await sub.exitWithin(30_000)).toBe(0);
    expect(sub.stdout).toEqual(range(1, 60, 'msg'));
    expect(proxy.accepted).toBeGreaterThanOrEqual(3);
    expect(sub.logs.filter((l) => l.event === 'watch.disconnected').length).toBeGreaterThanOrEqual(2);
  });

  it('a long replay cut between etcd\'s catch-up batches resumes at the first message not printed', async () => {
    // etcd replays at most 1000 revisions per response to a watcher that is
    // behind, each stamped with the *current* revision; resuming from that
    // stamp (what etcd3 does by itself) would skip the rest of the backlog.
    const published: { m: string; rev: bigint }[] = [];
    for (let i = 0; i < 3000; i += 50) {
      const batch = range(i + 1, i + 50, 'backlog');
      const revs = await Promise.all(batch.map((m) => publish(client, 'backlog', m)));
      batch.forEach((m, j) => published.push({ m, rev: BigInt(revs[j].revision) }));
    }
    published.sort((a, b) => (a.rev < b.rev ? -1 : 1));
    const sub = new MeshProcess(['sub', 'backlog', '--from-rev', published[0].rev.toString(), '--count', '3000', '--etcd', proxy.endpoint]);
    await waitFor('first catch-up batch', () => sub.stdout.length >= 1, 20_000, 5);
    proxy.cut();
    expect(await sub.exitWithin(30_000)).toBe(0);
    expect(sub.stdout).toEqual(published.map((p) => p.m));
  });

  it('pub prints the revision; sub --from-rev replays from it, in order, and --count exits 0', async () => {
    const first = await runMesh(['pub', 'news', 'one', '--etcd', etcd.endpoints]);
    expect(first.code).toBe(0);
    expect(first.stdout).toEqual([expect.stringMatching(/^\d+$/)]);
    const second = await runMesh(['pub', 'news', 'two words', '--etcd', etcd.endpoints]);
    await publish(client, 'newsletter', 'not on topic news'); // shares the string prefix, not the topic
    await publishAll('news', ['three', '']);
    const replay = await runMesh(['sub', 'news', '--from-rev', second.stdout[0], '--count', '3', '--etcd', etcd.endpoints]);
    expect(replay.code).toBe(0);
    expect(replay.stdout).toEqual(['two words', 'three', '']);
    const json = await runMesh(['sub', 'news', '--from-rev', first.stdout[0], '--count', '1', '--json', '--etcd', etcd.endpoints]);
    expect(JSON.parse(json.stdout[0])).toMatchObject({ value: 'one', revision: first.stdout[0], key: expect.stringMatching(/^news\//) });
  });

  it('pub --ttl attaches a lease of that many seconds', async () => {
    const res = await runMesh(['pub', 'ephemeral', 'soon gone', '--ttl', '7', '--etcd', etcd.endpoints]);
    expect(res.code).toBe(0);
    const { stdout } = await etcd.etcdctl(['get', '--prefix', 'ephemeral/', '-w', 'json']);
    const lease = BigInt(/"lease":(\d+)/.exec(stdout)![1]);
    const ttl = await etcd.etcdctl(['lease', 'timetolive', lease.toString(16)]);
    expect(ttl.stdout).toMatch(/granted with TTL\(7s\)/);
  });

  it('the library delivers Buffers byte for byte, and nothing after close()', async () => {
    const sub = await Subscription.open(client, 'bytes');
    const got: Message[] = [];
    sub.on('message', (m: Message) => got.push(m));
    const payload = Buffer.from([0, 1, 0xff, 0x0a, 0x7f]);
    // The start revision is fixed by open(): a message published now is delivered even if the watch is still opening.
    const p = await publish(client, 'bytes', payload);
    await waitFor('message', () => got.length === 1, 10_000);
    expect(got[0].value.equals(payload)).toBe(true);
    expect(got[0].revision).toBe(p.revision);
    sub.close();
    sub.close(); // idempotent
    await publish(client, 'bytes', 'after close');
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toHaveLength(1);
  });

  it('usage errors: one stderr line, exit 2', async () => {
    for (const args of [['pub'], ['pub', 'topic'], ['pub', '', 'msg'], ['pub', 't', 'm', '--ttl', 'x'], ['sub'], ['sub', ''], ['sub', 't', '--count', 'abc'], ['sub', 't', '--count', '0'], ['sub', 't', '--from-rev', '0'], ['sub', 't', '--bogus']]) {
      const res = await runMesh([...args, '--etcd', etcd.endpoints]);
      expect({ args, code: res.code }).toEqual({ args, code: 2 });
      expect(res.stderr.filter((l) => l.trim() !== '')).toHaveLength(1);
    }
    expect((await runMesh(['sub', '--help'])).code).toBe(0);
    expect((await runMesh(['pub', '--help'])).code).toBe(0);
  });

  // Last: compaction removes the history the other tests replay.
  it('a replay or resume past compacted history fails loudly instead of skipping', async () => {
    await publishAll('audit', ['a', 'b']);
    const { stdout } = await etcd.etcdctl(['get', 'audit', '-w', 'json']);
    const rev = /"revision":(\d+)/.exec(stdout)![1];
    await etcd.etcdctl(['compact', rev]);
    const res = await runMesh(['sub', 'audit', '--from-rev', '1', '--count', '2', '--etcd', etcd.endpoints]);
    expect(res.code).toBe(1);
    expect(res.stdout).toEqual([]);
    expect(res.stderr.find((l) => l.startsWith('mesh: '))).toMatch(/compacted.*revision 1\b/);

    const sub = await Subscription.open(client, 'audit', { fromRevision: 1n });
    const err = await new Promise<unknown>((resolve) => sub.on('error', resolve));
    expect(err).toBeInstanceOf(CompactedError);
    sub.close();
  });

  it('a subscriber that comes back after its resume revision was compacted says so and exits 1', async () => {
    const live = new MeshProcess(['sub', 'outage', '--etcd', proxy.endpoint]);
    await live.waitForLog('watch.state', { to: 'WATCHING' });
    await publishAll('outage', ['before']);
    await waitFor('first message', () => live.stdout.length === 1, 15_000);
    proxy.pause();
    proxy.cut();
    const revs = await publishAll('outage', ['missed 1', 'missed 2']);
    await etcd.etcdctl(['compact', revs[1]]);
    proxy.resume();
    expect(await live.exitWithin(30_000)).toBe(1);
    expect(live.stdout).toEqual(['before']);
    expect(live.stderr.find((l) => l.startsWith('mesh: '))).toMatch(/^mesh: topic outage: etcd has compacted its history past revision \d+.*messages may have been lost/);
  });
});
