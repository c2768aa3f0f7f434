/**
 * The load phases: connect every generator's sockets to Archety or the raw relay, drive them
 * in a closed loop (saturation) or an open loop (a fixed rate), and gather the figures: ops
 * and frames per second, the server's CPU per op, group-commit and latency histograms from
 * Archety's /metrics, and the generators' own load.
 */
import { addAccount, describeAccount, emptyAccount } from './accounting.ts';
import { commitRate, describeBound, histogramMs, meanCommitBatch, meanCommitMs, readMetrics } from './archetyApi.ts';
import { type Context, GENERATOR_CORE } from './context.ts';
import { pgActivity } from './database.ts';
import { cpuTimeMs, runDelayMs } from './machine.ts';
import { at, progress } from './progress.ts';
import type { ConnectResult, LoadResult, OpAccount, RoomSpec, Target } from './protocol.ts';
import { fmt, sum } from './stats.ts';

export interface LoadFigures {
  opsPerSecond: number;
  framesPerSecond: number;
  serverCpuPct: number;
  serverUsPerOp: number;
  generatorEldP99Ms: number;
  generatorCpuPct: number;
  account: OpAccount;
  latencies: number[];
  closedDuring: number;
  commitBatch: number;
  commitsPerSecond: number;
  commitMs: number;
  /** p99 of one group-commit transaction (histogram bucket bound), ms. */
  commitP99Ms: number;
  /** The server's own received → applied p50 / p99 (histogram bucket bounds), ms. */
  serverP50Ms: number;
  serverP99Ms: number;
  /** The server's event-loop delay p99 over the phase (prom-client's gauge, reset at each scrape), ms. */
  serverEldP99Ms: number;
  /** The server's longest event-loop stall over the phase, ms. */
  serverEldMaxMs: number;
  /** Share of the measured window the server's main thread was runnable but waiting for its core, %. */
  serverWaitPct: number;
  /** PostgreSQL checkpoints (anywhere on the cluster) and autovacuum runs of miniapp_ops during the phase. */
  pgCheckpoints: number;
  pgAutovacuums: number;
}

/** Which rooms a load phase drives, and how many sockets each. */
export interface Shape {
  rooms: number;
  fanout: number;
}

/** The shape of the saturation, latency and fan-out phases. */
const hotShape = (ctx: Context): Shape => ({ rooms: ctx.o.rooms, fanout: ctx.o.fanout });

export function loadRooms(ctx: Context, shape: Shape = hotShape(ctx)): RoomSpec[][] {
  const perWorker: RoomSpec[][] = ctx.workers.map(() => []);
  for (let r = 0; r < shape.rooms; r++) {
    perWorker[r % ctx.workers.length].push({ sessionId: ctx.sessions[r], users: ctx.users.slice(0, shape.fanout) });
  }
  return perWorker;
}

export async function connectAll(ctx: Context, target: Target, shape: Shape = hotShape(ctx)): Promise<void> {
  const rooms = loadRooms(ctx, shape);
  const baseUrl = target === 'archety' ? ctx.server.url : ctx.relay.url;
  const results = await Promise.all(
    ctx.workers.map((w, i) =>
      w.request<ConnectResult>(
        { cmd: 'connect', target, baseUrl, rooms: rooms[i], concurrency: ctx.o.connectConcurrency },
        60_000,
      ),
    ),
  );
  const failed = sum(results.map((r) => r.failed));
  if (failed) throw new Error(`${failed} of the ${target} load sockets could not be opened`);
  const setup = results.reduce((acc, r) => addAccount(acc, r.setup), emptyAccount());
  if (target === 'archety') addAccount(ctx.archetyTotal, setup);
  if (setup.sent) progress(`  ${target}: budget items inserted: ${describeAccount(setup)}`);
}

export async function disconnectAll(ctx: Context): Promise<void> {
  await Promise.all(ctx.workers.map((w) => w.request({ cmd: 'disconnect' }, 30_000)));
}

/** One load phase on every worker at once; the server's CPU is read at the window's bounds. */
export async function runLoad(
  ctx: Context,
  target: Target,
  mode: { cmd: 'saturate'; window: number } | { cmd: 'rate'; rate: number; interleave?: boolean },
  warmMs: number,
  measureMs: number,
  shape: Shape = hotShape(ctx),
): Promise<LoadFigures> {
  const server = target === 'archety' ? ctx.server : ctx.relay;
  const metricsBefore = target === 'archety' ? await readMetrics(ctx.server.url) : undefined;
  const pgBefore = await pgActivity(ctx.dbUrl);
  const startAt = Date.now() + 300;
  const rooms = loadRooms(ctx, shape);
  const cpuA = at(startAt + warmMs, () => [cpuTimeMs(server.pid), runDelayMs(server.pid)]);
  const cpuB = at(startAt + warmMs + measureMs, () => [cpuTimeMs(server.pid), runDelayMs(server.pid)]);
  const timeout = warmMs + measureMs + ctx.o.drainMs + 30_000;
  const results = await Promise.all(
    ctx.workers.map((w, i) =>
      mode.cmd === 'saturate'
        ? w.request<LoadResult>(
            { cmd: 'saturate', startAt, warmMs, measureMs, window: mode.window, drainMs: ctx.o.drainMs },
            timeout,
          )
        : w.request<LoadResult>(
            {
              cmd: 'rate',
              startAt,
              warmMs,
              measureMs,
              rate: (mode.rate * rooms[i].length) / shape.rooms,
              drainMs: ctx.o.drainMs,
              interleave: mode.interleave,
            },
            timeout,
          ),
    ),
  );
  const [cpu0, wait0] = await cpuA;
  const [cpu1, wait1] = await cpuB;
  const serverCpuMs = cpu1 - cpu0;
  const metricsAfter = target === 'archety' ? await readMetrics(ctx.server.url) : undefined;
  const pgAfter = await pgActivity(ctx.dbUrl);
  const applied = sum(results.map((r) => r.window.applied));
  const account = results.reduce((acc, r) => addAccount(acc, r.account), emptyAccount());
  if (target === 'archety') addAccount(ctx.archetyTotal, account);
  const phaseMs = warmMs + measureMs + 300;
  return {
    opsPerSecond: sum(results.map((r) => (r.window.applied * 1000) / r.window.ms)),
    framesPerSecond: sum(results.map((r) => (r.window.frames * 1000) / r.window.ms)),
    serverCpuPct: (serverCpuMs / measureMs) * 100,
    serverUsPerOp: applied ? (serverCpuMs * 1000) / applied : Number.NaN,
    generatorEldP99Ms: Math.max(...results.map((r) => r.window.eldP99Ms)),
    generatorCpuPct: (sum(results.map((r) => r.window.cpuMs)) / measureMs) * 100,
    account,
    latencies: results.flatMap((r) => r.latencies),
    closedDuring: sum(results.map((r) => r.closedDuring)),
    commitBatch: metricsBefore && metricsAfter ? meanCommitBatch(metricsBefore, metricsAfter) : Number.NaN,
    commitsPerSecond: metricsBefore && metricsAfter ? commitRate(metricsBefore, metricsAfter, phaseMs) : Number.NaN,
    commitMs: metricsBefore && metricsAfter ? meanCommitMs(metricsBefore, metricsAfter) : Number.NaN,
    commitP99Ms:
      metricsBefore && metricsAfter
        ? histogramMs('archety_group_commit_seconds', metricsBefore, metricsAfter, 99)
        : Number.NaN,
    serverP50Ms:
      metricsBefore && metricsAfter
        ? histogramMs('archety_op_latency_seconds', metricsBefore, metricsAfter, 50)
        : Number.NaN,
    serverP99Ms:
      metricsBefore && metricsAfter
        ? histogramMs('archety_op_latency_seconds', metricsBefore, metricsAfter, 99)
        : Number.NaN,
    serverEldP99Ms: (metricsAfter?.get('nodejs_eventloop_lag_p99_seconds') ?? Number.NaN) * 1000,
    serverWaitPct: ((wait1 - wait0) / measureMs) * 100,
    serverEldMaxMs: (metricsAfter?.get('nodejs_eventloop_lag_max_seconds') ?? Number.NaN) * 1000,
    pgCheckpoints: pgAfter.checkpoints - pgBefore.checkpoints,
    pgAutovacuums: pgAfter.autovacuums - pgBefore.autovacuums,
  };
}

export function describeLoad(f: LoadFigures): string {
  const commit = Number.isFinite(f.commitBatch)
    ? `; ${fmt(f.commitsPerSecond)} group commits/s of ${fmt(f.commitBatch, 1)} writes, ${fmt(f.commitMs, 1)} ms each (p99 ${describeBound(f.commitP99Ms, 500)}); ` +
      `server-side op latency p50 ${describeBound(f.serverP50Ms, 2500)}, p99 ${describeBound(f.serverP99Ms, 2500)}, ` +
      `server event-loop delay p99 ${fmt(f.serverEldP99Ms, 1)} ms, max ${fmt(f.serverEldMaxMs)} ms`
    : '';
  return (
    `${fmt(f.opsPerSecond)} ops/s, ${fmt(f.framesPerSecond)} frames/s; server ${fmt(f.serverCpuPct)}% of its core ` +
    `(waited for it ${fmt(f.serverWaitPct)}% of the time) = ` +
    `${fmt(f.serverUsPerOp, 1)} µs/op${commit}; generators: event-loop p99 ${fmt(f.generatorEldP99Ms, 1)} ms, ` +
    `CPU ${fmt(f.generatorCpuPct)}% of core ${GENERATOR_CORE}${f.closedDuring ? `; ${f.closedDuring} sockets closed during the phase` : ''}` +
    (f.pgCheckpoints || f.pgAutovacuums
      ? `; PostgreSQL meanwhile: ${f.pgCheckpoints} checkpoint(s), ${f.pgAutovacuums} autovacuum/analyze of miniapp_ops`
      : '')
  );
}
