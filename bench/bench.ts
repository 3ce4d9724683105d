/**
 * `npm run bench` (`node dist/bench/bench.js [--quick]`): the mesh's figures,
 * each a ratio or a distribution measured side by side in one run, against a
 * local etcd and real `mesh server` processes on loopback.
 *
 * stdout: progress lines, a table, then ONE JSON line with every figure.
 * This file is the runner: flags, the plan they pick, cleanup on any end,
 * and what is printed around the stages (bench-stages.ts) and their rows
 * (bench-rows.ts).
 */
process.env.MESH_LOG_LEVEL ??= 'warn';

import { loadavg, cpus } from 'node:os';
import { Command, Option } from 'commander';
import { MeshProcess } from '../demo/mesh-process';
import { Report, round } from './bench-report';
import { plan, SECTIONS, type BenchFlags, type Section } from './bench-plan';
import { runStages } from './bench-stages';
import { addRows } from './bench-rows';
import { versusRows, versusTable } from './scale-versus';

const log = (s: string) => process.stdout.write(`${s}\n`);

/** Everything to undo, newest first; run once on success, failure or Ctrl-C. */
const cleanups: Array<() => Promise<void> | void> = [];
let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  if (!cleaning) {
    cleaning = (async () => {
      for (const f of cleanups.reverse()) {
        try {
          await f();
        } catch {
          /* keep cleaning */
        }
      }
      MeshProcess.killAllNow();
    })();
  }
  return cleaning;
}

async function main(flags: BenchFlags): Promise<void> {
  const p = plan(flags.quick);
  const only = new Set<Section>((flags.only as Section[] | undefined) ?? SECTIONS);
  const t0 = performance.now();
  const load0 = loadavg();
  log(`etcd-mesh bench (${flags.quick ? 'quick' : 'full'}): ${cpus().length} CPUs, load average ${load0.map((l) => l.toFixed(2)).join(' ')}, node ${process.version}`);

  const figures = await runStages({ flags, plan: p, only, log, defer: (undo) => cleanups.push(undo) });
  const report = new Report();
  addRows(report, figures, p, flags);
  // Ours against Go's (the scale section's herd and its client over 1,000 backends, when both ran).
  const versus = versusRows(figures.fleet?.herd, figures.fleet?.goHerd, figures.fleet?.wide);

  const load1 = loadavg();
  const durationS = round((performance.now() - t0) / 1000, 1);
  const verdicts = report.rows.filter((r) => r.ok !== undefined);
  const json = {
    quick: flags.quick,
    cpus: cpus().length,
    node: process.version,
    etcdMembers: flags.members,
    concurrency: flags.concurrency,
    loadAvgStart: load0.map((l) => round(l, 2)),
    ...figures,
    ...(versus.length ? { versusGo: versus } : {}),
    loadAvgEnd: load1.map((l) => round(l, 2)),
    durationS,
    targets: Object.fromEntries(verdicts.map((r) => [`${r.section}: ${r.metric}`, r.ok])),
    targetsMet: verdicts.filter((r) => r.ok).length,
    targetsTotal: verdicts.length,
  };
  log('');
  log(report.table());
  log('');
  if (versus.length) {
    const h = figures.fleet!.herd;
    log(versusTable(versus, `ours vs Go: ${h.registrations} registrations in ${p.fleet.herdProcesses} processes and ${h.resolvers} resolvers in ${p.fleet.herdProcesses}, TTL ${h.ttl} s, every etcd member SIGSTOPped for 3 TTL; one client over ${figures.fleet!.wide.wideFull.backends} backends`));
    log('');
  } else if (figures.fleet?.goSkipped) {
    log(`ours vs Go: not run (${figures.fleet.goSkipped})`);
    log('');
  }
  log(`${verdicts.filter((r) => r.ok).length}/${verdicts.length} targets met in ${durationS} s; load average now ${load1.map((l) => l.toFixed(2)).join(' ')}`);
  await cleanup();
  process.stdout.write(`${JSON.stringify(json)}\n`);
}

const program = new Command('bench')
  .description('etcd-mesh benchmark: resolver overhead, fairness, latency, time to traffic/leave, scale')
  .option('--quick', 'CI-sized run (about a minute)', false)
  .addOption(new Option('--members <n>', 'etcd cluster size').default(1).argParser((v) => Number.parseInt(v, 10)))
  .addOption(new Option('--concurrency <n>', 'closed-loop calls in flight for overhead and fairness runs').default(32).argParser((v) => Number.parseInt(v, 10)))
  .addOption(
    new Option('--traffic-rate <n>', 'calls/s of the load running during the join and leave trials (0: closed loop, CPU-bound)').default(2000).argParser((v) => Number.parseInt(v, 10)),
  )
  .addOption(new Option('--only <sections...>', `run only some sections: ${SECTIONS.join(' ')}`).choices([...SECTIONS]));

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    process.stderr.write(`bench: ${sig}, cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

program.parse();
main(program.opts<BenchFlags>()).then(
  () => process.exit(0),
  async (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanup();
    process.exit(1);
  },
);
