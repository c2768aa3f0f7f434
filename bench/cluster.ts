/**
 * `npm run bench:cluster`: cluster mode (issue 9) on this machine, in one run:
 *
 * 1. durable miniapp ops/s and relay events/s with 1, 2 and 3 `archety start` processes on one
 *    PostgreSQL and one Redis, with the summed server CPU per op (the cost of forwarding);
 * 2. op → `applied` latency of sockets on a non-owner process against sockets on the owner, in
 *    the same phase, at half the 2-process saturation rate;
 * 3. failover: SIGKILLs of a session's owner under load, each followed by a restart; time to
 *    the first op the new owner applied, and no acknowledged op lost;
 * 4. Redis calls per applied op (server-wide `INFO commandstats` over the measured window,
 *    less the rate of an idle window: Redis cannot count per key prefix).
 *
 * Two cores: every server process is pinned to core 0 and the load generators to core 1
 * (PostgreSQL and Redis unpinned), so 2 and 3 processes share the one core 1 process had: they
 * cannot add throughput here, and the CPU per op is the figure that shows what they cost.
 */

import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mintToken } from '../src/auth/mintToken.ts';
import { balanced, describeAccount, emptyAccount } from './lib/accounting.ts';
import { createSessions } from './lib/archetyApi.ts';
import { runFailover } from './lib/clusterFailover.ts';
import {
  anchorOwners,
  type ClusterLoadContext,
  connectPlaced,
  describeCost,
  disconnectAll,
  place,
  RelaySink,
  runMiniappLoad,
  runRelayLoad,
} from './lib/clusterLoad.ts';
import { BenchNode } from './lib/clusterNodes.ts';
import { CLUSTER_USAGE, type ClusterBenchOptions, parseClusterOptions } from './lib/clusterOptions.ts';
import { countsBetween, RedisProbe, totalCalls } from './lib/clusterRedis.ts';
import {
  failoverLines,
  goals,
  type LatencyFigures,
  type RedisBackground,
  renderGoals,
  type SizeFigures,
  sizeTable,
} from './lib/clusterReport.ts';
import { parsedOrExit } from './lib/commandLine.ts';
import { GENERATOR_CORE, SERVER_CORE } from './lib/context.ts';
import { openBenchDatabase, pgSettings } from './lib/database.ts';
import { cpuProbes, fileLimit, hasTaskset, machineInfo, pin } from './lib/machine.ts';
import { MINIAPP_BENCH_SERVER_ENV, oneCoreNote, repoRoot, startWorkers } from './lib/processes.ts';
import { currentPhaseName, phase, progress, sleep, startRun } from './lib/progress.ts';
import type { RoomSpec } from './lib/protocol.ts';
import { startRelayWorkers } from './lib/relayWorkers.ts';
import { addResultsSection, README_TEMPLATE } from './lib/report.ts';
import { fmt, percentile } from './lib/stats.ts';

const ISSUER = 'archety';
const AUDIENCE = 'archety';
const loadAverage = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(', ');

function serverEnv(dbUrl: string, redisUrl: string, prefix: string, secret: string) {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/tmp',
    DATABASE_URL: dbUrl,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: prefix,
    JWT_SECRET: secret,
    HOST: '127.0.0.1',
    ...MINIAPP_BENCH_SERVER_ENV,
    // And as bench:relay: no relay or sender budget either.
    RELAY_EVENTS_PER_SECOND: '10000000',
    RELAY_EVENTS_BURST: '10000000',
    SENDER_MESSAGES_PER_MINUTE: '10000000',
    SENDER_BURST: '10000000',
    WS_IDLE_TIMEOUT_S: '960',
  };
}

/** Redis calls per second by command while the cluster (one process) idles: other Redis users and lease extensions. */
async function redisBackground(redis: RedisProbe, ms: number): Promise<RedisBackground> {
  const before = await redis.commandCounts();
  const t = performance.now();
  await sleep(ms);
  const after = await redis.commandCounts();
  const windowMs = performance.now() - t;
  const perSecond = new Map(countsBetween(before, after).map(([cmd, n]) => [cmd, (n * 1000) / windowMs]));
  return { perSecond, windowMs };
}

interface Run {
  o: ClusterBenchOptions;
  ctx: ClusterLoadContext;
  nodes: BenchNode[];
  sessions: string[];
  users: string[];
  relayToken: string;
  pinned: boolean;
  relayWorkers: ReturnType<typeof startRelayWorkers>;
  sink: RelaySink;
}

/** The miniapp and relay phases with the first `n` processes; with 2, also the latency of both paths. */
async function sizePhase(run: Run, n: number): Promise<{ size: SizeFigures; latency?: LatencyFigures[] }> {
  const { o, ctx } = run;
  const live = run.nodes.slice(0, n);
  const probeBefore = await cpuProbes(run.pinned, o.quick);
  const rooms: RoomSpec[] = run.sessions
    .slice((n - 1) * o.rooms, n * o.rooms)
    .map((sessionId) => ({ sessionId, users: run.users }));
  const placements = place(live, ctx.workers.length, rooms);
  const remoteRooms = placements.flatMap((p) => p.rooms.filter((r) => r.owner !== p.node)).length;
  phase(
    `${n} process(es): miniapp at saturation (${fmt(rooms.length)} rooms × ${o.fanout} sockets, ${fmt(remoteRooms)} rooms owned away from their sockets)`,
  );
  await anchorOwners(ctx, placements);
  await connectPlaced(ctx, placements);
  const sat = await runMiniappLoad(ctx, live, placements, { cmd: 'saturate', window: o.window }, o.warmMs, o.measureMs);
  progress(
    `  ${fmt(sat.opsPerSecond)} ops/s, ${fmt(sat.usPerOp, 1)} µs server CPU per op; ${describeCost(sat.cost)}; generators' event-loop p99 ${fmt(sat.generatorEldP99Ms, 1)} ms`,
  );
  progress(`  ops: ${describeAccount(sat.account)}`);
  let latency: LatencyFigures[] | undefined;
  if (n === 2) {
    latency = [];
    // Half saturation (the goal's point), then a quiet rate: what forwarding costs when neither
    // process's event loop is busy with other work when a message arrives.
    for (const offered of [sat.opsPerSecond / 2, Math.min(o.quietRate, sat.opsPerSecond / 4)]) {
      phase(`2 processes: latency at ${fmt(offered)} ops/s (open loop), sockets on the owner vs on the other process`);
      const lat = await runMiniappLoad(
        ctx,
        live,
        placements,
        { cmd: 'rate', rate: offered },
        o.latencyWarmMs,
        o.latencyMeasureMs,
      );
      const figures: LatencyFigures = {
        offered,
        half: latency.length === 0,
        local: placements.flatMap((p, i) => (p.local ? lat.latencies[i] : [])),
        remote: placements.flatMap((p, i) => (p.local ? [] : lat.latencies[i])),
      };
      latency.push(figures);
      for (const [name, v] of [
        ['on the owner', figures.local],
        ['on the other process', figures.remote],
      ] as const)
        progress(
          `  socket ${name}: p50 ${fmt(percentile(v, 50), 2)} ms, p99 ${fmt(percentile(v, 99), 2)} ms over ${fmt(v.length)} ops`,
        );
      progress(`  ops: ${describeAccount(lat.account)}`);
    }
  }
  await disconnectAll(ctx);

  phase(
    `${n} process(es): relay events at saturation (${o.relayWorkers} generators × ${o.relayConcurrency} in flight)`,
  );
  const expected = run.sink.sends;
  const relay = await runRelayLoad(ctx, live, run.relayWorkers, run.relayToken, n * 1_000_000);
  progress(
    `  ${fmt(relay.eventsPerSecond)} events/s acknowledged (${relay.failed} failed), ${fmt(relay.usPerEvent)} µs server CPU per event; ${describeCost(relay.cost)}`,
  );
  if (!(await run.sink.drain(expected + relay.accepted, o.quick ? 60_000 : 120_000)))
    progress(`  ✗ not every accepted event was answered: ${fmt(run.sink.sends)} of ${fmt(expected + relay.accepted)}`);
  const probeAfter = await cpuProbes(run.pinned, o.quick);
  return {
    size: { processes: n, forwardedShare: remoteRooms / rooms.length, miniapp: sat, relay, probeBefore, probeAfter },
    latency,
  };
}

async function main(): Promise<number> {
  const o = parsedOrExit('bench:cluster', CLUSTER_USAGE, () => parseClusterOptions(process.argv.slice(2), process.env));
  const args = process.argv.slice(2).join(' ');
  const command = `npm run bench:cluster${args && !o.quick ? ` -- ${args}` : o.quick ? ':smoke' : ''}`;
  const { cleanups, cleanup, stopHeartbeat } = startRun(o.deadlineMs);
  const loadBefore = loadAverage();
  try {
    phase(`cluster benchmark (${o.quick ? 'quick' : 'default'} sizes); load average ${loadBefore}`);
    const pinned = hasTaskset();
    const files = fileLimit();
    if (pinned) pin(process.pid, GENERATOR_CORE);
    const machine = machineInfo();
    const core = (c: number) => (pinned ? c : null);

    const db = await openBenchDatabase(process.env);
    cleanups.push(() => db.drop());
    const pgInfo = await pgSettings(db.url);
    const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
    const prefix = `archety_bench_${randomBytes(5).toString('hex')}:`;
    const redis = new RedisProbe(redisUrl, prefix);
    cleanups.push(async () => {
      progress(`deleted ${await redis.deleteRunKeys()} Redis keys under ${prefix}`);
      await redis.close();
    });
    const redisVersion = await redis.version();
    await redis.countPublishes();

    const secret = randomBytes(32).toString('base64url');
    const key = new TextEncoder().encode(secret);
    const users = Array.from(
      { length: Math.max(o.fanout, o.failoverClients) },
      (_, k) => `+1555${String(2_000_000 + k)}`,
    );
    const mint = (sub: string, role: 'user' | 'relay') =>
      mintToken({ secret: key, issuer: ISSUER, audience: AUDIENCE, sub, role, ttlS: 3 * 3600 });
    const token = await mint(users[0], 'user');
    const relayToken = await mint('bench-relay', 'relay');
    const logDir = o.serverLogDir ? path.resolve(o.serverLogDir) : undefined;
    if (logDir) mkdirSync(logDir, { recursive: true });
    const settings = {
      env: serverEnv(db.url, redisUrl, prefix, secret),
      core: core(SERVER_CORE),
      fileLimit: files.granted,
      token,
      redis,
      logDir,
    };
    const nodes = [1, 2, 3].map((n) => new BenchNode(n, settings));
    cleanups.push(() => Promise.all(nodes.map((n) => n.stop())));

    phase('starting node-1 and the load generators');
    await nodes[0].start();
    const workers = startWorkers(o.workers, core(GENERATOR_CORE), files.granted);
    cleanups.push(async () => {
      for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGTERM');
      await Promise.all(workers.map((w) => w.exited));
    });
    await Promise.all(
      workers.map((w, i) =>
        w.request({ cmd: 'init', workerId: i, jwt: { secret, issuer: ISSUER, audience: AUDIENCE } }, 30_000),
      ),
    );
    const relayWorkers = startRelayWorkers(o.relayWorkers, core(GENERATOR_CORE), files.granted);
    cleanups.push(async () => {
      for (const w of relayWorkers) w.child.kill('SIGTERM');
    });
    const sessions = await createSessions({
      baseUrl: nodes[0].url,
      token,
      participants: users,
      count: 3 * o.rooms + 1,
      concurrency: 8,
    });
    const sink = await RelaySink.open(nodes[0], relayToken);
    const ctx: ClusterLoadContext = { o, workers, redis, token, total: emptyAccount() };
    const run: Run = {
      o,
      ctx,
      nodes,
      sessions,
      users: users.slice(0, o.fanout),
      relayToken,
      pinned,
      relayWorkers,
      sink,
    };

    phase('Redis calls while node-1 idles (other Redis users of this machine, lease extensions)');
    const bg = await redisBackground(redis, o.quick ? 500 : 3000);
    progress(`  ${fmt(totalCalls([...bg.perSecond]), 1)} calls/s`);

    const sizes: SizeFigures[] = [];
    let latency: LatencyFigures[] | undefined;
    for (let n = 1; n <= 3; n++) {
      if (n > 1) {
        phase(`starting node-${n}`);
        await nodes[n - 1].start();
      }
      const r = await sizePhase(run, n);
      sizes.push(r.size);
      latency ??= r.latency;
    }
    sink.close();

    // The size phases run with the default ACTOR_LEASE_MS (10 s): what a cluster extends at
    // steady state. The kills use a short lease, or 20 failovers would take minutes. The
    // processes are killed, not drained: nothing of their thousands of live actors is measured
    // after, and a drain of them takes seconds.
    await Promise.all(nodes.map((node) => node.kill()));
    await redis.stopCountingPublishes();
    const failoverNodes = [1, 2, 3].map(
      (n) => new BenchNode(n, { ...settings, env: { ...settings.env, ACTOR_LEASE_MS: String(o.leaseMs) } }),
    );
    cleanups.push(() => Promise.all(failoverNodes.map((node) => node.stop())));
    for (const node of failoverNodes) await node.start();

    phase(
      `failover: ${o.kills} SIGKILLs of the session's owner under load (${o.failoverClients} SDK clients over 3 processes, ACTOR_LEASE_MS=${o.leaseMs})`,
    );
    const failover = await runFailover(
      o,
      failoverNodes,
      redis,
      db.url,
      sessions[3 * o.rooms],
      users.slice(0, o.failoverClients).map(() => token),
    );

    const loadAfter = loadAverage();
    const table = sizeTable(sizes, bg);
    const goalList = goals(sizes, latency, failover, o.leaseMs, bg);
    const total = ctx.total;
    const when = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const lines = [
      table,
      '',
      'Goals (issue 9):',
      renderGoals(goalList),
      '',
      failoverLines(failover),
      `Miniapp op accounting (load phases): ${describeAccount(total)}.`,
      `Redis ${redisVersion}: PUBLISH counted exactly on the run's channels (a pattern subscription to its prefix); every other command from the server-wide INFO commandstats over each measured window, less its rate while one process idled for ${fmt(bg.windowMs / 1000, 1)} s (${fmt(totalCalls([...bg.perSecond]), 1)} calls/s in all): anything else using this Redis meanwhile still counts, so run it alone.`,
      `CPU probe (M iterations/s, ${pinned ? `core ${SERVER_CORE} / core ${GENERATOR_CORE}` : 'unpinned'}) before → after each size: ${sizes.map((s) => `${s.processes}: ${s.probeBefore.map((p) => fmt(p)).join('/')} → ${s.probeAfter.map((p) => fmt(p)).join('/')}`).join('; ')}.`,
      `Machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, PostgreSQL ${pgInfo.version} (fsync ${pgInfo.fsync}, synchronous_commit ${pgInfo.synchronousCommit}); ${pinned ? `every server process pinned to core ${SERVER_CORE}, load generators and this process to core ${GENERATOR_CORE}${oneCoreNote()}` : 'nothing pinned (no taskset)'}, PostgreSQL and Redis unpinned. Load average (1, 5, 15 min) before ${loadBefore}, after ${loadAfter}.`,
      `Sizes: ${o.rooms} rooms × ${o.fanout} sockets per cluster size, ${o.window} ops outstanding per socket, ${o.workers} miniapp generators; saturation ${o.warmMs / 1000} s + ${o.measureMs / 1000} s, latency ${o.latencyWarmMs / 1000} s + ${o.latencyMeasureMs / 1000} s at each rate; relay ${o.relayWorkers} generators × ${o.relayConcurrency} in flight over ${fmt(o.relayConversations)} fresh conversations per size, ${o.relayWarmMs / 1000} s + ${o.relayMeasureMs / 1000} s; one round each.`,
    ].join('\n');
    process.stdout.write(`\n## cluster benchmark — ${when}\n\n${lines}\nCommand: \`${command}\`\n\n`);
    if (o.readme) {
      addResultsSection(
        path.join(repoRoot, 'bench/README.md'),
        README_TEMPLATE,
        `### ${when} — \`${command}\`\n\n${lines}\n`,
      );
      progress('results written to bench/README.md');
    }
    phase('stopping');
    await Promise.all(workers.map((w) => w.request({ cmd: 'exit' }, 5000).catch(() => undefined)));
    await cleanup();
    if (!balanced(total) || failover.lost.length || failover.twice.length) {
      progress('op accounting does not balance, or acknowledged ops were lost: see above');
      return 1;
    }
    progress('done');
    return 0;
  } catch (err) {
    progress(
      `failed during "${currentPhaseName()}": ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    );
    await cleanup();
    return 1;
  } finally {
    stopHeartbeat();
  }
}

main().then((code) => process.exit(code));
