/** The summary table: each figure beside its peer or limit, the ratio, the goal and whether it is met. */
import type { LoadFigures } from './loadPhase.ts';
import type { BenchOptions } from './options.ts';
import type { QuietFigures } from './quietPhase.ts';
import type { Row } from './report.ts';
import type { SocketFigures } from './socketPhase.ts';
import { fmt, median, spread, sum } from './stats.ts';

/** What `us` µs of CPU per event projects to on one core. */
function perCore(us: number): string {
  return Number.isFinite(us) && us > 0 ? `${fmt(1e6 / us)}/s` : 'n/a';
}

/** `share` as a percentage, or n/a. */
function pct(share: number): string {
  return Number.isFinite(share) ? `${fmt(share * 100)}%` : 'n/a';
}

/** Goals from the issue; never weakened. */
export const GOALS = {
  opsVsCommits: 3,
  p99Ms: 25,
  fanoutShare: 0.5,
  rssPerSocketKiB: 8,
  upgradesPerSecond: 5000,
  /** Many quiet sessions: server CPU per op at most this many times the raw relay's. */
  quietCpuVsRaw: 1.5,
};

export interface Round {
  probeBefore: number[];
  probeAfter: number[];
  pgTxPerSecond: number;
  pgMeanMs: number;
  archety: LoadFigures;
  latency: LoadFigures & { offered: number; p50: number; p99: number };
  raw: LoadFigures;
}

/** The many-quiet-sessions rows. */
function quietRows(q: QuietFigures): Row[] {
  const where = `${fmt(q.shape.rooms * q.shape.fanout)} sockets over ${fmt(q.shape.rooms)} sessions, ${fmt(q.rate)} ops/s in all`;
  const cpuRatio = q.archety.serverUsPerOp / q.raw.serverUsPerOp;
  return [
    {
      metric: `Many quiet sessions (${where}, open loop): op → applied p50 / p99 / max`,
      archety: `${fmt(q.archety.p50, 2)} / ${fmt(q.archety.p99, 2)} / ${fmt(q.archety.max)} ms (server event-loop max ${fmt(q.archety.serverEldMaxMs)} ms)`,
      peer: `raw uWS relay, same load: ${fmt(q.raw.p50, 2)} / ${fmt(q.raw.p99, 2)} / ${fmt(q.raw.max)} ms`,
      ratio: `${fmt(q.archety.p99 / GOALS.p99Ms, 2)} of the limit`,
      goal: `p99 ≤ ${GOALS.p99Ms} ms`,
      met: q.archety.p99 <= GOALS.p99Ms,
    },
    {
      metric: 'Many quiet sessions: server CPU per op',
      archety: `${fmt(q.archety.serverUsPerOp, 1)} µs (${fmt(q.archety.opsPerSecond)} ops/s applied, server ${fmt(q.archety.serverCpuPct)}% of its core)`,
      peer: `raw uWS relay: ${fmt(q.raw.serverUsPerOp, 1)} µs`,
      ratio: `${fmt(cpuRatio, 2)}× raw`,
      goal: `≤ ${GOALS.quietCpuVsRaw}× raw`,
      met: cpuRatio <= GOALS.quietCpuVsRaw,
    },
  ];
}

export function summaryRows(
  o: BenchOptions,
  rounds: Round[],
  sockets: SocketFigures,
  quiet: QuietFigures | null = null,
): Row[] {
  const ops = rounds.map((r) => r.archety.opsPerSecond);
  const pg = rounds.map((r) => r.pgTxPerSecond);
  const opsRatio = rounds.map((r) => r.archety.opsPerSecond / r.pgTxPerSecond);
  const p50 = rounds.map((r) => r.latency.p50);
  const p99 = rounds.map((r) => r.latency.p99);
  const offered = rounds.map((r) => r.latency.offered);
  const frames = rounds.map((r) => r.archety.framesPerSecond);
  const rawFrames = rounds.map((r) => r.raw.framesPerSecond);
  const us = rounds.map((r) => r.archety.serverUsPerOp);
  const rawUs = rounds.map((r) => r.raw.serverUsPerOp);
  const genCpuArchety = rounds.map((r) => r.archety.generatorCpuPct);
  const genEldArchety = rounds.map((r) => r.archety.generatorEldP99Ms);
  const genCpuRaw = rounds.map((r) => r.raw.generatorCpuPct);
  const genEldRaw = rounds.map((r) => r.raw.generatorEldP99Ms);
  const n = rounds.length;
  const rs = (values: number[], digits = 0) => (n > 1 ? ` (rounds ${spread(values, digits)})` : '');
  const upgradeRates = sockets.bursts.map((b) => b.rate);
  const upgradeUs = sockets.bursts.map((b) => b.usPerUpgrade);
  const rawUpgradeUs = sockets.rawBursts.map((b) => b.usPerUpgrade);
  const mRawUp = median(sockets.rawBursts.map((b) => b.rate));
  const rssOk = sockets.perSocketKiB <= GOALS.rssPerSocketKiB;
  const allHeld = sockets.held.opened === sockets.heldTarget && sockets.held.failed === 0;
  const mOps = median(ops);
  const mPg = median(pg);
  const mFrames = median(frames);
  const mRaw = median(rawFrames);
  const mUs = median(us);
  const mRawUs = median(rawUs);
  const mUp = median(upgradeRates);
  return [
    {
      metric: `Durable applied ops/s at saturation (${fmt(o.rooms * o.fanout)} sockets, ${o.fanout}-way fan-out, median of ${n})`,
      archety: `${fmt(mOps)}${rs(ops)}`,
      peer: `PostgreSQL single-row commits, ${o.pgClients} clients: ${fmt(mPg)} tx/s${rs(pg)}`,
      ratio: `${fmt(mOps / mPg, 2)}×${n > 1 ? ` (rounds ${spread(opsRatio, 2)}×)` : ''}`,
      goal: `≥ ${GOALS.opsVsCommits}×`,
      met: mOps / mPg >= GOALS.opsVsCommits,
    },
    {
      metric: `op → applied p50 at ½ saturation (${fmt(median(offered))} ops/s offered, open loop)`,
      archety: `${fmt(median(p50), 2)} ms${rs(p50, 2)}`,
      peer: '',
      ratio: '',
      goal: '',
      met: null,
    },
    {
      metric: 'op → applied p99 at ½ saturation',
      archety: `${fmt(median(p99), 2)} ms${rs(p99, 2)}`,
      peer: `limit ${GOALS.p99Ms} ms`,
      ratio: `${fmt(median(p99) / GOALS.p99Ms, 2)} of the limit`,
      goal: `≤ ${GOALS.p99Ms} ms`,
      met: median(p99) <= GOALS.p99Ms,
    },
    {
      metric: `Fan-out frames/s delivered (${o.fanout}-way, closed loop)`,
      archety: `${fmt(mFrames)}${rs(frames)}`,
      peer: `raw uWS relay: ${fmt(mRaw)}${rs(rawFrames)}`,
      ratio: `${pct(mFrames / mRaw)}`,
      goal: `≥ ${GOALS.fanoutShare * 100}% of raw`,
      met: mFrames / mRaw >= GOALS.fanoutShare,
    },
    {
      metric: `Server CPU per op (${o.fanout}-way fan-out; projects to ops/s on one core)`,
      archety: `${fmt(mUs, 1)} µs${rs(us, 1)} → ${fmt(1e6 / mUs)} ops/s`,
      peer: `raw uWS relay: ${fmt(mRawUs, 1)} µs${rs(rawUs, 1)} → ${fmt(1e6 / mRawUs)} ops/s`,
      ratio: `${pct(mRawUs / mUs)} of raw`,
      goal: `≥ ${GOALS.fanoutShare * 100}% of raw`,
      met: mRawUs / mUs >= GOALS.fanoutShare,
    },
    {
      metric: `Sockets held (${fmt(sockets.heldTarget)} over ${fmt(o.sessions)} sessions)`,
      archety: `${fmt(sockets.held.opened)} open, ${fmt(sockets.held.failed)} errors (server: ${fmt(sockets.serverOpen)})`,
      peer: `${fmt(sockets.heldTarget)}`,
      ratio: `${fmt((sockets.held.opened / sockets.heldTarget) * 100)}%`,
      goal: 'all, no errors',
      met: allHeld,
    },
    {
      metric: `RSS per socket (VmRSS ${fmt(sockets.rssBeforeKiB / 1024, 1)} → ${fmt(sockets.rssAfterKiB / 1024, 1)} MiB, incl. ${fmt(o.sessions)} live sessions)`,
      archety: `${fmt(sockets.perSocketKiB, 2)} KiB`,
      peer: `limit ${GOALS.rssPerSocketKiB} KiB`,
      ratio: `${fmt(sockets.perSocketKiB / GOALS.rssPerSocketKiB, 2)} of the limit`,
      goal: `≤ ${GOALS.rssPerSocketKiB} KiB`,
      met: rssOk,
    },
    {
      metric: `JWT-authenticated upgrades/s (bursts of ${fmt(o.burstSockets)} with ${fmt(sockets.held.opened)} held, ${fmt(o.connectConcurrency * o.workers)} in flight, median of ${sockets.bursts.length})`,
      archety: `${fmt(mUp)}${sockets.bursts.length > 1 ? ` (bursts ${spread(upgradeRates)})` : ''}`,
      peer: `limit ${fmt(GOALS.upgradesPerSecond)}/s; raw uWS relay (no auth, same generator): ${fmt(mRawUp)}/s`,
      ratio: `${fmt(mUp / GOALS.upgradesPerSecond, 2)}× the limit; ${pct(mUp / mRawUp)} of raw`,
      goal: `≥ ${fmt(GOALS.upgradesPerSecond)}/s`,
      met: mUp >= GOALS.upgradesPerSecond && sum(sockets.bursts.map((b) => b.failed)) === 0,
    },
    {
      metric: 'Server CPU per upgrade (first to last upgrade of a burst; projects to upgrades/s on one core)',
      archety: `${fmt(median(upgradeUs), 1)} µs → ${perCore(median(upgradeUs))}`,
      peer: `raw uWS relay: ${fmt(median(rawUpgradeUs), 1)} µs → ${perCore(median(rawUpgradeUs))}`,
      ratio: `${pct(median(rawUpgradeUs) / median(upgradeUs))} of raw`,
      goal: '',
      met: null,
    },
    {
      metric:
        'Load generators at saturation (CPU of their one core; event-loop p99): Archety phases / raw-relay phases',
      archety: `${fmt(median(genCpuArchety))}%; ${fmt(median(genEldArchety), 1)} ms`,
      peer: `raw relay: ${fmt(median(genCpuRaw))}%; ${fmt(median(genEldRaw), 1)} ms`,
      ratio: '',
      goal: median(genCpuRaw) >= 90 ? 'raw figure is the generator’s (≥ 90% busy)' : '',
      met: null,
    },
    {
      metric: 'Archety main thread runnable but waiting for its core (PostgreSQL shares it): saturation / ½ saturation',
      archety: `${fmt(median(rounds.map((r) => r.archety.serverWaitPct)), 1)}% / ${fmt(median(rounds.map((r) => r.latency.serverWaitPct)), 1)}%`,
      peer: '',
      ratio: '',
      goal: '',
      met: null,
    },
    ...(quiet ? quietRows(quiet) : []),
  ];
}
