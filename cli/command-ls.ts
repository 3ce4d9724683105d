import { Command, Option } from 'commander';
import { addEtcdOptions, connectEtcd, type EtcdFlags } from './common';
import { parseName, parsePrefix } from './parse';
import { scanCluster, type ClusterView, type MonitorOptions } from '../coordination/monitor';
import { decodeEndpoint } from '../balancer/endpoint-codec';
import { componentLogger } from '../core/logger';
import { jsonSafe, shown } from '../coordination/monitor-text';

/**
 * `mesh ls [--service S] [--prefix P] [--election-prefix E] [--json]`: one
 * read of services, endpoints (metadata, lease, TTL left), election leaders
 * and lock holders. `--json` prints one ClusterView object (coordination/monitor.ts).
 */

export interface MonitorFlags extends EtcdFlags {
  prefix: string;
  service?: string;
  electionPrefix?: string;
  json: boolean;
}

/** The options `ls` and `top` share. */
export function addMonitorOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--prefix <prefix>', 'registry key prefix').default('services').argParser(parsePrefix))
    .addOption(new Option('--service <name>', 'only this service (default: all)').argParser(parseName))
    .addOption(new Option('--election-prefix <prefix>', 'look for elections and locks only under this key prefix (default: whole keyspace)'))
    .addOption(new Option('--json', 'JSON output').default(false));
}

export function monitorOptions(flags: MonitorFlags): MonitorOptions {
  return { prefix: flags.prefix, service: flags.service, electionPrefix: flags.electionPrefix, decodeRecord: decodeEndpoint };
}

function ttlText(ttl: number | null): string {
  if (ttl === null) return '-';
  return ttl < 0 ? 'expired' : `${ttl}s`;
}


/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  '));
}

/** The human view of a ClusterView (also `mesh top`'s screen). */
export function renderView(v: ClusterView): string[] {
  const lines: string[] = [];
  const eps = v.services.flatMap((s) => s.endpoints.map((e) => [shown(s.name), shown(e.addr), ttlText(e.ttl), e.lease ?? '-', jsonSafe(JSON.stringify(e.metadata))]));
  if (eps.length) lines.push(...table([['SERVICE', 'ENDPOINT', 'TTL', 'LEASE', 'METADATA'], ...eps]));
  else lines.push(`no services under ${shown(`${v.prefix}/`)}`);
  lines.push('');
  if (v.elections.length) lines.push(...table([['ELECTION', 'LEADER', 'TTL', 'CANDIDATES', 'KEY'], ...v.elections.map((e) => [shown(e.name), shown(e.leader.value), ttlText(e.leader.ttl), String(e.candidates), shown(e.leader.key)])]));
  else lines.push('no elections');
  if (v.locks.length) {
    lines.push('');
    lines.push(...table([['LOCK', 'HOLDER', 'TTL', 'WAITERS'], ...v.locks.map((l) => [shown(l.name), shown(l.holder.key), ttlText(l.holder.ttl), String(l.waiters)])]));
  }
  if (v.invalid.length) {
    lines.push('');
    lines.push(...table([['INVALID RECORD', 'REASON'], ...v.invalid.map((i) => [shown(i.key), shown(i.reason)])]));
  }
  return lines;
}

export function lsCommand(): Command {
  const cmd = new Command('ls').description('list services, their endpoints (metadata, lease TTL left), election leaders and lock holders');
  addEtcdOptions(addMonitorOptions(cmd));
  return cmd.action(async (flags: MonitorFlags) => {
    const etcd = await connectEtcd(flags);
    try {
      const view = await scanCluster(etcd, monitorOptions(flags), componentLogger('monitor'));
      process.stdout.write(flags.json ? `${jsonSafe(JSON.stringify(view))}\n` : `${renderView(view).join('\n')}\n`);
    } finally {
      etcd.close();
    }
  });
}
