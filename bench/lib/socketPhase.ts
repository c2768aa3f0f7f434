/**
 * The socket phase: 10,000 authenticated sockets held over 1,000 sessions (RSS per socket),
 * then bursts of upgrades with valid tokens against Archety, each followed by the same burst
 * against the raw relay (the generator's and the machine's ceiling).
 */
import { readMetrics } from './archetyApi.ts';
import { type Context, GENERATOR_CORE } from './context.ts';
import { cpuTimeMs, rssKiB } from './machine.ts';
import { at, phase, progress, sleep } from './progress.ts';
import type { OpenResult, RoomSpec, Target } from './protocol.ts';
import { fmt, sum } from './stats.ts';

export interface SocketFigures {
  held: OpenResult;
  heldTarget: number;
  serverOpen: number;
  openPerSecond: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  perSocketKiB: number;
  bursts: BurstFigures[];
  rawBursts: BurstFigures[];
  failures: Record<string, number>;
}

export interface BurstFigures {
  rate: number;
  opened: number;
  failed: number;
  failures: Record<string, number>;
  ms: number;
  /** Server CPU per completed upgrade, from the first upgrade to the last (closing excluded), µs. */
  usPerUpgrade: number;
  eldP99Ms: number;
  genCpuPct: number;
  /** Archety's event-loop delay p99 over the burst (NaN for the raw relay), ms. */
  serverEldP99Ms: number;
}

/** Upgrades every socket of `rooms` as fast as the generators can, then closes them. */
export async function upgradeBurst(ctx: Context, target: Target, rooms: RoomSpec[][]): Promise<BurstFigures> {
  const server = target === 'archety' ? ctx.server : ctx.relay;
  await Promise.all(
    ctx.workers.map((w, i) => w.request({ cmd: 'prepare', target, baseUrl: server.url, rooms: rooms[i] }, 60_000)),
  );
  if (target === 'archety') await readMetrics(server.url);
  const start = Date.now() + 200;
  const cpuA = at(start, () => cpuTimeMs(server.pid));
  const r = mergeOpen(
    await Promise.all(
      ctx.workers.map((w) =>
        w.request<OpenResult>({ cmd: 'burst', concurrency: ctx.o.connectConcurrency, startAt: start }, 120_000),
      ),
    ),
  );
  const cpuUsed = cpuTimeMs(server.pid) - (await cpuA);
  // Scraping resets prom-client's event-loop histogram: this reading covers the burst.
  const serverEldP99Ms =
    target === 'archety'
      ? ((await readMetrics(server.url)).get('nodejs_eventloop_lag_p99_seconds') ?? Number.NaN) * 1000
      : Number.NaN;
  await Promise.all(ctx.workers.map((w) => w.request({ cmd: 'releaseBurst' }, 60_000)));
  const ms = Math.max(1, r.lastOpenAt - start);
  return {
    rate: (r.opened * 1000) / ms,
    opened: r.opened,
    failed: r.failed,
    failures: r.failures,
    ms,
    // Below two clock ticks of CPU the reading is noise (quick mode on the raw relay).
    usPerUpgrade: cpuUsed >= 20 ? (cpuUsed * 1000) / Math.max(1, r.opened) : Number.NaN,
    eldP99Ms: r.eldP99Ms,
    genCpuPct: (r.cpuMs / ms) * 100,
    serverEldP99Ms,
  };
}

export function describeBurst(b: BurstFigures): string {
  return (
    `${fmt(b.opened)} upgrades in ${fmt(b.ms)} ms = ${fmt(b.rate)}/s (${fmt(b.failed)} failed${describeFailures(b.failures)}); ` +
    `server ${fmt(b.usPerUpgrade, 1)} µs CPU per upgrade${Number.isFinite(b.serverEldP99Ms) ? `, event-loop p99 ${fmt(b.serverEldP99Ms, 1)} ms` : ''}; generators: event-loop p99 ${fmt(b.eldP99Ms, 1)} ms, ` +
    `CPU ${fmt(b.genCpuPct)}% of core ${GENERATOR_CORE}`
  );
}

export function describeFailures(failures: Record<string, number>): string {
  const list = Object.entries(failures).map(([k, v]) => `${k}×${v}`);
  return list.length ? `: ${list.join(', ')}` : '';
}

export function mergeOpen(results: OpenResult[]): OpenResult {
  const failures: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v;
  return {
    opened: sum(results.map((r) => r.opened)),
    failed: sum(results.map((r) => r.failed)),
    failures,
    lastOpenAt: Math.max(...results.map((r) => r.lastOpenAt)),
    eldP99Ms: Math.max(...results.map((r) => r.eldP99Ms)),
    cpuMs: sum(results.map((r) => r.cpuMs)),
  };
}

/** Sockets spread over every session, `perSession` each, dealt to the workers. */
export function spreadRooms(ctx: Context, perSession: number, total: number, userOffset: number): RoomSpec[][] {
  const perWorker: RoomSpec[][] = ctx.workers.map(() => []);
  let left = total;
  for (let s = 0; s < ctx.sessions.length && left > 0; s++) {
    const n = Math.min(perSession, left);
    left -= n;
    const users = Array.from({ length: n }, (_, k) => ctx.users[(userOffset + k) % ctx.users.length]);
    perWorker[s % ctx.workers.length].push({ sessionId: ctx.sessions[s], users });
  }
  return perWorker;
}

export async function socketsPhase(ctx: Context, idleMs: number): Promise<SocketFigures> {
  const { o } = ctx;
  const pid = ctx.server.pid;
  const perSession = Math.ceil(o.holdSockets / ctx.sessions.length);
  phase(`sockets: opening ${fmt(o.holdSockets)} sockets over ${fmt(ctx.sessions.length)} sessions (one JWT each)`);
  await sleep(idleMs);
  const rssBeforeKiB = rssKiB(pid);
  const rooms = spreadRooms(ctx, perSession, o.holdSockets, 0);
  await Promise.all(
    ctx.workers.map((w, i) =>
      w.request({ cmd: 'prepare', target: 'archety', baseUrl: ctx.server.url, rooms: rooms[i] }, 60_000),
    ),
  );
  const startAt = Date.now() + 200;
  const ticker = setInterval(
    () => progress(`  … opening sockets (server RSS ${fmt(rssKiB(pid) / 1024, 1)} MiB)`),
    3000,
  );
  const held = mergeOpen(
    await Promise.all(
      ctx.workers.map((w) =>
        w.request<OpenResult>({ cmd: 'hold', concurrency: o.connectConcurrency, startAt }, 180_000),
      ),
    ),
  );
  clearInterval(ticker);
  const openPerSecond = (held.opened * 1000) / Math.max(1, held.lastOpenAt - startAt);
  await sleep(idleMs);
  const rssAfterKiB = rssKiB(pid);
  const serverOpen = (await readMetrics(ctx.server.url)).get('archety_sockets_open{endpoint="miniapp"}') ?? Number.NaN;
  const perSocketKiB = (rssAfterKiB - rssBeforeKiB) / Math.max(1, held.opened);
  progress(
    `  held ${fmt(held.opened)} sockets (${fmt(held.failed)} failed${describeFailures(held.failures)}; server counts ${fmt(serverOpen)} open), ` +
      `${fmt(openPerSecond)}/s ready incl. session activation; RSS ${fmt(rssBeforeKiB / 1024, 1)} → ` +
      `${fmt(rssAfterKiB / 1024, 1)} MiB = ${fmt(perSocketKiB, 2)} KiB per socket`,
  );

  const bursts: BurstFigures[] = [];
  const rawBursts: BurstFigures[] = [];
  const failures = { ...held.failures };
  const burstRooms = spreadRooms(ctx, Math.ceil(o.burstSockets / ctx.sessions.length), o.burstSockets, perSession);
  for (let b = 0; b < o.bursts; b++) {
    phase(
      `sockets: upgrade burst ${b + 1}/${o.bursts}: ${fmt(o.burstSockets)} upgrades with valid JWTs, then the same on the raw relay`,
    );
    const r = await upgradeBurst(ctx, 'archety', burstRooms);
    for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v;
    bursts.push(r);
    progress(`  archety: ${describeBurst(r)}`);
    await sleep(Math.min(idleMs, 1000));
    const raw = await upgradeBurst(ctx, 'raw', burstRooms);
    rawBursts.push(raw);
    progress(`  raw relay (no auth): ${describeBurst(raw)}`);
    await sleep(Math.min(idleMs, 1000));
  }
  phase('sockets: closing the held sockets');
  await Promise.all(ctx.workers.map((w) => w.request({ cmd: 'release' }, 60_000)));
  return {
    held,
    heldTarget: o.holdSockets,
    serverOpen,
    openPerSecond,
    rssBeforeKiB,
    rssAfterKiB,
    perSocketKiB,
    bursts,
    rawBursts,
    failures,
  };
}
