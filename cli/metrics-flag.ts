import { InvalidArgumentError, Option, type Command } from 'commander';
import { isIP } from 'node:net';
import { setMeshObserver } from '../core/mesh-observer';
import type { MeshMetrics } from '../services/metrics-registry';
import type { MetricsHttpServer } from '../services/metrics-http';
import { CommandFailure } from './common';

/** `--metrics HOST:PORT`, parsed. */
export interface MetricsAddr {
  host: string;
  port: number;
}

export interface MetricsFlags {
  metrics?: MetricsAddr;
}

/**
 * HOST:PORT strictly: an IPv4 address, a bracketed IPv6 one or a host name,
 * and a port 0..65535 (0 picks a free one; the log and the registry
 * Metadata name the real one). Anything else is a usage error (exit 2).
 */
export function parseMetricsAddr(value: string): MetricsAddr {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  const host = m ? (m[1] ?? m[2]) : '';
  if (!m || port > 65_535 || (m[1] !== undefined && isIP(host) !== 6) || host === '' || host.startsWith('-') || host.startsWith('.')) {
    throw new InvalidArgumentError(`${JSON.stringify(value)} is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464)`);
  }
  return { host, port };
}

export function addMetricsOption(cmd: Command): Command {
  return cmd.addOption(new Option('--metrics <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics (go-grpc-prometheus names, mesh_*, process)').argParser(parseMetricsAddr));
}

/** The process's metrics, installed as its mesh observer and served; undefined without --metrics. */
export interface ServedMetrics {
  metrics: MeshMetrics;
  http: MetricsHttpServer;
  addr: string;
}

/**
 * Install the observer before any channel is built (channels take their
 * client interceptor at construction), then bind. A bind failure is one
 * line and exit 1 (CommandFailure).
 */
export async function serveMetrics(flags: MetricsFlags): Promise<ServedMetrics | undefined> {
  if (!flags.metrics) return undefined;
  // Loaded only with --metrics: prom-client costs every mesh command ~130 ms of CPU at start-up.
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { MeshMetrics } = require('../services/metrics-registry') as typeof import('../services/metrics-registry');
  const { MetricsHttpServer } = require('../services/metrics-http') as typeof import('../services/metrics-http');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const metrics = new MeshMetrics();
  setMeshObserver(metrics);
  const http = new MetricsHttpServer(metrics.registry);
  try {
    const addr = await http.listen(flags.metrics.host, flags.metrics.port);
    return { metrics, http, addr };
  } catch (err) {
    setMeshObserver(undefined);
    throw new CommandFailure((err as Error).message);
  }
}
