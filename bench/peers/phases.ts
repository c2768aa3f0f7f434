/**
 * The measured phases, the same for every server: open the clients (RSS before and after),
 * drive them in a closed loop (saturation) or an open loop (a fixed offered rate), and climb
 * the ladder of offered rates until the server no longer keeps up. The server's own CPU time
 * is read from /proc at the bounds of each measured window (and PostgreSQL's, for Archety).
 */
import { addAccount, describeAccount, emptyAccount } from '../lib/accounting.ts';
import { cpuTimeByCommand, cpuTimeMs, cpuTimeSpent, rssKiB } from '../lib/machine.ts';
import type { ServerProcess, Worker } from '../lib/processes.ts';
import { at, progress, sleep } from '../lib/progress.ts';
import type { OpAccount } from '../lib/protocol.ts';
import { fmt, percentile, sum } from '../lib/stats.ts';
import type { PeersOptions } from './options.ts';
import type { PeerConnectResult, PeerLoadResult, PeerName, PeerRequest, PeerRoom } from './protocol.ts';

export interface Ctx {
  o: PeersOptions;
  workers: Worker<PeerRequest>[];
  /** Each worker's rooms, per server (Archety's are its sessions). */
  rooms: Record<PeerName, PeerRoom[][]>;
  /** Every edit of the run, per server (setup, warm-up, ladder and rounds). */
  totals: Record<PeerName, OpAccount>;
}

export interface Target {
  peer: PeerName;
  server: ServerProcess;
}

export interface ConnectFigures {
  clients: number;
  failed: number;
  failures: Record<string, number>;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  perSocketKiB: number;
  ms: number;
}

export interface PhaseFigures {
  /** Offered edits/s (NaN in the closed loop). */
  offered: number;
  editsPerSecond: number;
  framesPerSecond: number;
  deliveriesPerSecond: number;
  serverCpuPct: number;
  serverUsPerEdit: number;
  /** PostgreSQL's CPU (all its processes) per edit, µs; NaN for the servers that do not use it. */
  pgUsPerEdit: number;
  generatorEldP99Ms: number;
  generatorCpuPct: number;
  account: OpAccount;
  p50: number;
  p99: number;
  max: number;
  samples: number;
  dropped: number;
}

/** Opens every client (and inserts its item); the server's RSS before and after, once idle. */
export async function connectAll(ctx: Ctx, t: Target): Promise<ConnectFigures> {
  const rssBeforeKiB = rssKiB(t.server.pid);
  const results = await Promise.all(
    ctx.workers.map((w, i) =>
      w.request<PeerConnectResult>(
        {
          cmd: 'connect',
          peer: t.peer,
          baseUrl: t.server.url,
          rooms: ctx.rooms[t.peer][i],
          concurrency: ctx.o.connectConcurrency,
        },
        120_000,
      ),
    ),
  );
  const failures: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v;
  const setup = results.reduce((acc, r) => addAccount(acc, r.setup), emptyAccount());
  addAccount(ctx.totals[t.peer], setup);
  const clients = sum(results.map((r) => r.clients));
  const failed = sum(results.map((r) => r.failed));
  const ms = Math.max(...results.map((r) => r.ms));
  progress(
    `  ${fmt(clients)} clients open in ${fmt(ms / 1000, 1)} s${failed ? `, ${failed} failed (${JSON.stringify(failures)})` : ''}; items: ${describeAccount(setup)}`,
  );
  if (failed) throw new Error(`${failed} of the ${t.peer} clients could not connect: ${JSON.stringify(failures)}`);
  await sleep(ctx.o.idleMs);
  const rssAfterKiB = rssKiB(t.server.pid);
  return {
    clients,
    failed,
    failures,
    rssBeforeKiB,
    rssAfterKiB,
    perSocketKiB: (rssAfterKiB - rssBeforeKiB) / Math.max(1, clients),
    ms,
  };
}

export async function disconnectAll(ctx: Ctx): Promise<void> {
  await Promise.all(ctx.workers.map((w) => w.request({ cmd: 'disconnect' }, 60_000)));
}

/** One load phase on every worker at once. `rate` (open loop) is in edits/s over all clients. */
export async function runLoad(
  ctx: Ctx,
  t: Target,
  mode: { kind: 'closed' } | { kind: 'open'; rate: number },
  warmMs: number,
  measureMs: number,
): Promise<PhaseFigures> {
  const startAt = Date.now() + 300;
  const total = sum(ctx.rooms[t.peer].map((rooms) => sum(rooms.map((r) => r.users.length))));
  const withPg = t.peer === 'archety';
  const cpuA = at(startAt + warmMs, () => ({
    server: cpuTimeMs(t.server.pid),
    pg: withPg ? cpuTimeByCommand('postgres') : new Map<number, number>(),
  }));
  const cpuB = at(startAt + warmMs + measureMs, () => ({
    server: cpuTimeMs(t.server.pid),
    pg: withPg ? cpuTimeByCommand('postgres') : new Map<number, number>(),
  }));
  const results = await Promise.all(
    ctx.workers.map((w, i) => {
      const mine = sum(ctx.rooms[t.peer][i].map((r) => r.users.length));
      return w.request<PeerLoadResult>(
        {
          cmd: 'load',
          mode: mode.kind,
          window: ctx.o.window,
          rate: mode.kind === 'open' ? (mode.rate * mine) / total : 0,
          startAt,
          warmMs,
          measureMs,
          drainMs: ctx.o.drainMs,
        },
        warmMs + measureMs + ctx.o.drainMs + 60_000,
      );
    }),
  );
  const a = await cpuA;
  const b = await cpuB;
  const serverCpuMs = b.server - a.server;
  const pgCpuMs = withPg ? cpuTimeSpent(a.pg, b.pg) : Number.NaN;
  const applied = sum(results.map((r) => r.window.applied));
  const account = results.reduce((acc, r) => addAccount(acc, r.account), emptyAccount());
  addAccount(ctx.totals[t.peer], account);
  const latencies = results.flatMap((r) => r.latencies);
  const perSecond = (f: (r: PeerLoadResult) => number) => sum(results.map((r) => (f(r) * 1000) / r.window.ms));
  return {
    offered: mode.kind === 'open' ? mode.rate : Number.NaN,
    editsPerSecond: perSecond((r) => r.window.applied),
    framesPerSecond: perSecond((r) => r.window.frames),
    deliveriesPerSecond: perSecond((r) => r.window.deliveries),
    serverCpuPct: (serverCpuMs / measureMs) * 100,
    serverUsPerEdit: applied ? (serverCpuMs * 1000) / applied : Number.NaN,
    pgUsPerEdit: applied ? (pgCpuMs * 1000) / applied : Number.NaN,
    generatorEldP99Ms: Math.max(...results.map((r) => r.window.eldP99Ms)),
    generatorCpuPct: (sum(results.map((r) => r.window.cpuMs)) / measureMs) * 100,
    account,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.length ? latencies.reduce((m, v) => Math.max(m, v), 0) : Number.NaN,
    samples: latencies.length,
    dropped: sum(results.map((r) => r.dropped)),
  };
}

export function describePhase(f: PhaseFigures): string {
  const latency = f.samples
    ? `; echo p50 ${fmt(f.p50, 1)} / p99 ${fmt(f.p99, 1)} / max ${fmt(f.max, 1)} ms (${fmt(f.samples)} edits)`
    : '';
  const pg = Number.isFinite(f.pgUsPerEdit) ? ` + PostgreSQL ${fmt(f.pgUsPerEdit, 1)} µs/edit` : '';
  return (
    `${fmt(f.editsPerSecond)} edits/s${Number.isFinite(f.offered) ? ` of ${fmt(f.offered)} offered` : ''}, ` +
    `${fmt(f.framesPerSecond)} frames/s${latency}; server ${fmt(f.serverCpuPct)}% of its core = ${fmt(f.serverUsPerEdit, 1)} µs/edit${pg}; ` +
    `generators: event-loop p99 ${fmt(f.generatorEldP99Ms, 1)} ms, CPU ${fmt(f.generatorCpuPct)}%` +
    `${f.dropped ? `; ${f.dropped} clients dropped` : ''}`
  );
}

export interface LadderStep extends PhaseFigures {
  /** Why this step counts as saturated (null when the server kept up). */
  saturated: string | null;
}

/** A generator whose event loop lags more than this (p99, ms) measures itself, not the server. */
const GENERATOR_ELD_LIMIT_MS = 50;

/** Why an open-loop step shows the server (or the generator) no longer keeping up, or null. */
function saturation(f: PhaseFigures): string | null {
  if (f.editsPerSecond < 0.9 * f.offered) return `applied ${fmt((100 * f.editsPerSecond) / f.offered)}% of offered`;
  if (f.p99 > 1000) return `p99 ${fmt(f.p99)} ms`;
  if (f.account.inFlight > 0) return `${fmt(f.account.inFlight)} edits still unanswered after the drain`;
  if (f.dropped > 0) return `${f.dropped} clients dropped`;
  if (f.generatorEldP99Ms > GENERATOR_ELD_LIMIT_MS)
    return `the generator's event-loop p99 ${fmt(f.generatorEldP99Ms)} ms`;
  return null;
}

/** Open-loop steps of rising offered rate until the server saturates (or the steps run out). */
export async function runLadder(ctx: Ctx, t: Target): Promise<LadderStep[]> {
  const steps: LadderStep[] = [];
  let rate = ctx.o.ladderStart;
  for (let i = 0; i < ctx.o.ladderSteps; i++) {
    const f = await runLoad(ctx, t, { kind: 'open', rate }, ctx.o.ladderWarmMs, ctx.o.ladderMeasureMs);
    const step = { ...f, saturated: saturation(f) };
    steps.push(step);
    progress(`  ladder ${fmt(rate)}/s: ${describePhase(f)}${step.saturated ? ` — saturated (${step.saturated})` : ''}`);
    if (step.saturated) break;
    rate = Math.round(rate * ctx.o.ladderFactor);
  }
  return steps;
}

/** The highest applied rate the ladder saw: the server's saturation as the ladder measured it. */
export function ladderSaturation(steps: LadderStep[]): number {
  return Math.max(...steps.map((s) => s.editsPerSecond));
}
