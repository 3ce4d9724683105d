import type { WideResult } from './scale-wide';
import { AUTO_SUBSET_ABOVE, AUTO_SUBSET_SIZE } from '../balancer/subset';
import { fmtDist, fmtMB, median, round, type Report } from './bench-report';
import type { BenchFlags, Plan } from './bench-plan';
import type { BenchFigures } from './bench-stages';
import { reportErrors } from './bench-errors';

/**
 * The table's rows: for every figure a run has, in a fixed order (not the
 * order the stages ran), its section, its name, its value as printed, and
 * its target and verdict where it has one. The JSON line's `targets` are
 * these rows' verdicts.
 */
export function addRows(report: Report, f: BenchFigures, p: Plan, flags: BenchFlags): void {
  if (f.overhead) {
    const o = f.overhead;
    report.row('overhead', `rps ratio resolver/static, median of ${p.pairs} pairs`, String(o.rpsRatioMedianPair), '>= 0.98', o.rpsRatioMedianPair >= 0.98);
    report.row('overhead', `rps resolver / static (mean of ${p.pairs} runs each)`, `${o.resolver.rps} / ${o.static.rps} = ${o.rpsRatio}`);
    report.row('latency', 'p50 ms resolver / static (median of runs)', `${o.resolver.p50} / ${o.static.p50} = ${o.p50Ratio}`);
    report.row('latency', `p99 ratio resolver/static, median of ${p.pairs} pairs`, String(o.p99RatioMedianPair), '<= 1.10', o.p99RatioMedianPair <= 1.1);
    report.row('latency', 'p99 ms resolver / static (median of runs)', `${o.resolver.p99} / ${o.static.p99} = ${o.p99Ratio}`);
    report.row('overhead', `simultaneous A/B (${flags.concurrency >> 1}+${flags.concurrency >> 1}): rps ratio`, String(o.simultaneous.rpsRatio));
    report.row('latency', `simultaneous A/B: p50 ratio / p99 ratio`, `${o.simultaneous.p50Ratio} / ${o.simultaneous.p99Ratio}`);
    report.row('overhead', 'failed calls', String(o.failed), '0', o.failed === 0);
    report.row('fairness', 'max/min share, 3 backends, resolver', String(o.fairnessResolver), '<= 1.02', o.fairnessResolver <= 1.02);
    report.row('fairness', 'max/min share, 3 backends, static (reference)', String(o.fairnessStatic));
  }
  const fairness10 = f.fairness10;
  if (fairness10) {
    report.row('fairness', 'max/min share, 10 backends, resolver', String(fairness10.resolver), '<= 1.02', fairness10.resolver <= 1.02);
    report.row('fairness', 'max/min share, 10 backends, static (reference)', String(fairness10.static));
  }
  if (f.loadAware) {
    const lb = f.loadAware;
    const e = lb.equal;
    report.row('lb equal', 'max/min share, load_aware (round_robin)', `${e.maxMin.load_aware} (${e.maxMin.round_robin})`, '<= 1.05', e.maxMin.load_aware <= 1.05);
    report.row('lb equal', `rps ratio load_aware/round_robin, median of ${p.lbEqualRuns} pairs`, String(e.rpsRatio), '>= 0.98', e.rpsRatio >= 0.98);
    report.row('lb equal', 'rps load_aware / round_robin (means)', `${e.rps.load_aware} / ${e.rps.round_robin}`);
    for (const r of lb.slow) {
      const la = r.policy === 'load_aware';
      report.row('lb slow', `${r.policy}: slow backend's share`, `${r.slowSharePct}%`, la ? '<= 10%' : undefined, la ? r.slowSharePct <= 10 : undefined);
      report.row('lb slow', `${r.policy}: p99 slow / healthy`, `${r.slowP99} / ${r.healthyP99} ms = ${r.p99Ratio}`, la ? '<= 1.3' : undefined, la ? r.p99Ratio <= 1.3 : undefined);
      report.row('lb slow', `${r.policy}: rps slow / healthy`, `${r.slowRps} / ${r.healthyRps} = ${r.rpsRatio}`, la ? '>= 0.9' : undefined, la ? r.rpsRatio >= 0.9 : undefined);
      report.row('lb slow', `${r.policy}: failed calls`, String(r.failed), la ? '0' : undefined, la ? r.failed === 0 : undefined);
    }
    for (const w of lb.weights) {
      const la = w.policy === 'load_aware';
      report.row('lb weights', `${w.policy}: weight-10 backend's share (90/10 asked)`, `${w.lightSharePct}% of ${w.calls}`, la ? '8-12%' : undefined, la ? Math.abs(w.lightSharePct - 10) <= 2 : undefined);
    }
    for (const b of lb.brownout) {
      const la = b.policy === 'load_aware';
      report.row('lb brownout', `${b.policy}: attempts per ok call (server-side)`, `${b.attemptsPerOk} (p99 ${b.p99} ms, failed ${b.failed})`, la ? '<= 1.2' : undefined, la ? b.attemptsPerOk <= 1.2 : undefined);
    }
  }
  const join = f.join;
  if (join) {
    report.row('join', 'key written → first reply from new backend', fmtDist(join.firstReplyMs), 'p99 < 100 ms', join.firstReplyMs.p99 < 100 && join.missed === 0);
    report.row('join', '  key written → put acknowledged', fmtDist(join.putAckMs));
    report.row('join', '  key written → watch event here', fmtDist(join.watchEventMs));
    report.row('join', '  key written → resolver delivered set', fmtDist(join.resolverDeliveryMs));
    report.row('join', '  key written → server logged first call', fmtDist(join.serverFirstCallMs));
    report.row('join', '  delivered → first reply (connect + pick)', fmtDist(join.deliveryToFirstReplyMs));
    report.row('join', 'trials without a reply within 3 s', String(join.missed), '0', join.missed === 0);
  }
  const leave = f.leave;
  if (leave) {
    report.row('leave', 'SIGTERM → key gone (delete seen on watch)', fmtDist(leave.keyGoneMs), 'p99 < 100 ms', leave.keyGoneMs.p99 < 100 && leave.keyGoneMs.n === leave.trials);
    report.row('leave', 'SIGTERM → last reply from leaving server', fmtDist(leave.lastReplyMs), 'p99 < 100 ms', leave.lastReplyMs.p99 < 100);
    report.row('leave', '  SIGTERM → resolver delivered set without it', fmtDist(leave.resolverDeliveryMs));
    report.row('leave', '  SIGTERM → start of the call behind the last reply', fmtDist(leave.lastReplyCallStartMs));
    report.row('leave', '  server revoke RPC (its own log)', fmtDist(leave.revokeRpcMs));
    report.row('leave', '  SIGTERM → process exit (drain)', fmtDist(leave.exitMs));
    report.row('leave', 'non-zero exits', String(leave.nonZeroExits), '0', leave.nonZeroExits === 0);
  }
  if (f.trafficLoop) {
    const tl = f.trafficLoop;
    report.row('join/leave', 'failed calls during join+leave load', `${tl.failed} of ${tl.ok + tl.failed}`, '0', tl.failed === 0);
  }
  const scale = f.scale;
  if (scale) {
    for (const s of scale.firstSet) {
      const big = s.endpoints >= 10_000;
      report.row('scale', `new resolver → first full set, ${s.endpoints} endpoints`, `${fmtDist(s.ms)}, got ${s.count}`, big ? 'max < 1000 ms' : undefined, big ? s.ms.max < 1000 && s.count === s.endpoints : undefined);
    }
    const c = scale.churn;
    report.row('scale', `churn over ${c.setSize}: events (rate)`, `${c.events} in ${c.seconds} s (${c.achievedPerSecond}/s)`, `${c.targetPerSecond}/s`, c.achievedPerSecond >= 0.95 * c.targetPerSecond);
    report.row('scale', 'churn: event written → set delivered', fmtDist(c.lagMs), 'p99 < 200 ms', c.lagMs.p99 < 200 && c.lost === 0);
    report.row('scale', '  churn: from write ack → set delivered', fmtDist(c.lagFromAckMs));
    report.row('scale', '  churn: etcd write issued → acknowledged', fmtDist(c.writeRttMs));
    report.row('scale', 'churn: deliveries / events (coalescing)', `${c.deliveries} / ${c.events} (${c.eventsPerDelivery} events per delivery)`);
    report.row('scale', 'churn: events never delivered', String(c.lost), '0', c.lost === 0);
    report.row('scale', 'churn: resolver process CPU (of which recording)', `${c.probeCpuMsPerS} ms per s (${c.recordingMsPerS})`);
    report.row('scale', 'churn: event-loop delay p99/max, resolver | writer', `${c.resolverLoopDelayMs.p99}/${c.resolverLoopDelayMs.max} | ${c.writerLoopDelayMs.p99}/${c.writerLoopDelayMs.max} ms`);
    const m = scale.memory;
    report.row('scale', `resolver process RSS at ${m.endpoints} (baseline)`, `${fmtMB(m.at10k.rss)} (${fmtMB(m.baseline.rss)})`);
    report.row('scale', `resolver heap used at ${m.endpoints} (baseline)`, `${fmtMB(m.at10k.heapUsed)} (${fmtMB(m.baseline.heapUsed)})`);
    report.row('scale', 'RSS / heap used after churn', `${fmtMB(m.afterChurn.rss)} / ${fmtMB(m.afterChurn.heapUsed)}`);
  }
  if (f.burst) {
    const b = f.burst;
    for (const count of [...new Set(b.summary.map((x) => x.resolvers))]) {
      const old = b.summary.find((x) => x.resolvers === count && x.mode === 'immediate')!;
      const cur = b.summary.find((x) => x.resolvers === count && x.mode === 'default')!;
      const what = `${count} resolver${count > 1 ? 's' : ''} in one process`;
      report.row('burst', `${b.registrations} puts in one txn, ${what}: rebuilds per resolver (before)`, `${cur.txnRebuilds} (${old.txnRebuilds})`, '1', cur.txnRebuilds === 1);
      report.row('burst', `${b.registrations} separate puts, ${what}: rebuilds per resolver (before)`, `${cur.putsRebuilds} (${old.putsRebuilds}); written in ${cur.putsWriteMs} ms, exact after ${cur.putsExactMs} ms`, '<= 10 (or 1 per 100 ms to exact, + 3)', cur.putsRebuilds <= Math.max(10, Math.ceil(cur.putsExactMs / 100) + 3));
      report.row('burst', `  process CPU, txn | separate puts (before)`, `${cur.txnCpuMs} ms (${old.txnCpuMs}) | ${cur.putsCpuMs} ms (${old.putsCpuMs})`);
      report.row('burst', `  empty sets handed over | sets not exact`, `${cur.emptyDeliveries + old.emptyDeliveries} | ${cur.wrong + old.wrong}`, '0 | 0', cur.emptyDeliveries + old.emptyDeliveries + cur.wrong + old.wrong === 0);
    }
  }
  if (f.fleet) {
    const { own, shared, herd: h, wide: w } = f.fleet;
    for (const r of [own, shared]) {
      const what = r.shared ? 'one lease per process' : 'own lease each';
      report.row('scale', `${r.registrations} registrations (${what}, ${r.processes} processes): all visible in etcd`, `${r.allVisibleMs} ms`, '< 10 000 ms', r.allVisibleMs < 10_000);
      report.row('scale', `  etcd requests/s at steady state (${what}, TTL ${r.ttl} s)`, `${r.steadyPerS}/s, ${r.leases} leases`);
    }
    report.row('scale', '  steady-state requests: own lease / shared', `${own.steadyPerS} / ${shared.steadyPerS} = ${round(own.steadyPerS / Math.max(0.1, shared.steadyPerS), 0)}x`);
    report.row('scale', `herd (${h.registrations} reg, ${h.resolvers} resolvers, TTL ${h.ttl}): etcd answering → all registered again`, `${h.reregisteredMs} ms (${h.losses} leases lost)`, '< 3 000 ms', h.reregisteredMs < 3_000 && h.keysAfter === h.registrations);
    report.row('scale', '  herd: empty sets handed to grpc-js (smallest set; errors handed over)', `${h.emptySets} (${h.minSetAfterFull}; ${h.errorDeliveries})`, '0', h.emptySets === 0);
    report.row('scale', '  herd: last registration back → every resolver correct', `${h.resolversAfterRegisteredMs} ms (${h.resolversCorrect}/${h.resolvers} correct)`, '< 1 000 ms', h.resolversAfterRegisteredMs < 1_000 && h.resolversCorrect === h.resolvers);
    report.row('scale', '  herd: etcd msgs/s steady | peak 200 ms after SIGCONT | mean over first second', `${h.steadyPerS} | ${h.peakPerS} | ${h.firstSecondMsgs}`);
    const first = (v: WideResult['wide']) => Math.max(...v.firstCallMs);
    report.row('scale', `one client, ${w.wide.backends} backends: first successful call (max)`, `${first(w.wide)} ms (3 backends: ${first(w.narrow)} ms)`, '< 2 000 ms', first(w.wide) < 2_000);
    report.row('scale', `  rps ${w.wide.backends} / 3 backends (medians; defaults: a subset of ${AUTO_SUBSET_SIZE} above ${AUTO_SUBSET_ABOVE})`, `${median(w.wide.rps)} / ${median(w.narrow.rps)} = ${w.ratio}`, '>= 0.9', w.ratio >= 0.9);
    report.row('scale', `  rps ${w.wide.backends} with --subset 0 (every backend) / 3 backends`, `${median(w.wideFull.rps)} / ${median(w.narrow.rps)} = ${w.fullRatio} (first call ${first(w.wideFull)} ms)`);
    report.row('scale', '  client RSS after run | idle CPU: 1000 / 1000 --subset 0 / 3', `${w.wide.rssMB} | ${w.wide.idleCpuMsPerS} ms/s; ${w.wideFull.rssMB} | ${w.wideFull.idleCpuMsPerS}; ${w.narrow.rssMB} | ${w.narrow.idleCpuMsPerS}`);
    report.row('scale', '  failed calls (all variants)', String(w.wide.failed + w.narrow.failed + w.wideFull.failed), '0', w.wide.failed + w.narrow.failed + w.wideFull.failed === 0);
  }
  if (f.metrics) {
    const m = f.metrics;
    report.row('metrics', `throughput ratio on/off = CPU per call off/on (load + greeters) at ${m.rate}/s each, median of ${p.metricsRounds} rounds`, String(m.cpuRatioMedian), '>= 0.98', m.cpuRatioMedian >= 0.98);
    report.row('metrics', 'same ratio from the closed-loop rounds (biased: each side at the rate it got)', String(m.closedCpuRatioMedian));
    report.row('metrics', `rps ratio on/off, side by side, median of ${p.metricsRounds} rounds (scheduler-split; noisy)`, String(m.rpsRatioMedian));
    report.row('metrics', 'rps on / off (medians)', `${m.onRps} / ${m.offRps}`);
    report.row('metrics', 'failed calls', String(m.failed), '0', m.failed === 0);
  }
  if (f.errors) reportErrors(report, f.errors, f.errors.runS);
  if (f.xds) {
    const x = f.xds;
    report.row('xds', 'etcd put → push received, 1 client, 1,000 endpoints', fmtDist(x.pushLatency), 'p99 <= 100 ms', x.pushLatency.p99 <= 100);
    report.row('xds', '  put answered → push received', fmtDist(x.pushLatencyAfterCommit));
    report.row('xds', `  to the last of ${x.clients} clients (bench decodes every copy)`, fmtDist(x.pushLatencyFanout));
    report.row('xds', `pushes written within 100 ms, ${x.clients} clients (plane's own count)`, `${round(x.serverPushesWithin100ms * 100, 1)}%`);
    report.row('xds', 'memory per connected client (RSS)', fmtMB(x.rssBytesPerClient));
    report.row('xds', `churn ${x.churn.writesPerSecond} writes/s: pushes per client, settled after the last write`, `${x.churn.pushesPerClient}, ${x.churn.settleMs} ms`);
  }
}
