/**
 * `npm run bench:miniapp`: the miniapp benchmark. In one run, side by side with its peer or
 * its limit:
 *
 * 1. durable applied ops/s at saturation vs the same PostgreSQL's single-row commit rate;
 * 2. p50/p99 op → `applied` latency at half the measured saturation rate (open loop);
 * 3. fan-out frames/s vs a raw uWebSockets.js relay (`bench/rawRelay.ts`), and the server's
 *    own CPU time per op for both (the fair figure: the generator saturates first);
 * 4. sockets held and RSS per socket (10,000 sockets over 1,000 sessions), and
 *    JWT-authenticated upgrades/s.
 *
 * The server under test runs as its own process pinned to core 0, the load generators
 * (`bench/loadWorker.ts`) to core 1, PostgreSQL unpinned (bench/README.md, BENCHMARKING.md).
 * Everything targets 127.0.0.1, is bounded in count and time, and stops by itself.
 */

import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { mintToken } from '../src/auth/mintToken.ts';
import { balanced, describeAccount, emptyAccount } from './lib/accounting.ts';
import { createSessions } from './lib/archetyApi.ts';
import { parsedOrExit } from './lib/commandLine.ts';
import { type Context, GENERATOR_CORE, SERVER_CORE } from './lib/context.ts';
import { openBenchDatabase, type PgSettings, pgSettings, singleRowCommitRate, storedOps } from './lib/database.ts';
import { connectAll, describeLoad, disconnectAll, runLoad } from './lib/loadPhase.ts';
import { cpuProbes, fileLimit, hasTaskset, machineInfo, pin } from './lib/machine.ts';
import { parseOptions, USAGE } from './lib/options.ts';
import { MINIAPP_BENCH_SERVER_ENV, oneCoreNote, repoRoot, startServerProcess, startWorkers } from './lib/processes.ts';
import { currentPhaseName, phase, progress, sleep, startRun } from './lib/progress.ts';
import { quietPhase } from './lib/quietPhase.ts';
import { addResultsSection, README_TEMPLATE, renderTable } from './lib/report.ts';
import { socketsPhase } from './lib/socketPhase.ts';
import { fmt, percentile } from './lib/stats.ts';
import { type Round, summaryRows } from './lib/summary.ts';

const ISSUER = 'archety';
const AUDIENCE = 'archety';

async function loadRound(
  ctx: Context,
  label: string,
  warmMs: number,
  measureMs: number,
  pinned: boolean,
): Promise<Round> {
  const { o } = ctx;
  const probeBefore = await cpuProbes(pinned, o.quick);
  phase(`${label}: PostgreSQL single-row commits, ${o.pgClients} clients`);
  const pgRate = await singleRowCommitRate(ctx.dbUrl, o.pgClients, o.pgWarmMs, o.pgMeasureMs);
  progress(`  ${fmt(pgRate.txPerSecond)} tx/s (mean ${fmt(pgRate.meanMs, 2)} ms per commit)`);

  phase(
    `${label}: Archety at saturation (${fmt(o.rooms * o.fanout)} sockets, ${o.fanout}-way fan-out, ${o.window} ops outstanding per socket)`,
  );
  await connectAll(ctx, 'archety');
  const archety = await runLoad(ctx, 'archety', { cmd: 'saturate', window: o.window }, warmMs, measureMs);
  progress(`  ${describeLoad(archety)}`);
  progress(`  ops: ${describeAccount(archety.account)}`);

  const offered = archety.opsPerSecond / 2;
  phase(`${label}: Archety latency at half saturation (${fmt(offered)} ops/s, open loop)`);
  const lat = await runLoad(ctx, 'archety', { cmd: 'rate', rate: offered }, o.latencyWarmMs, o.latencyMeasureMs);
  const latency = { ...lat, offered, p50: percentile(lat.latencies, 50), p99: percentile(lat.latencies, 99) };
  progress(
    `  p50 ${fmt(latency.p50, 2)} ms, p99 ${fmt(latency.p99, 2)} ms over ${fmt(lat.latencies.length)} ops; ${describeLoad(lat)}`,
  );
  progress(`  ops: ${describeAccount(lat.account)}`);
  await disconnectAll(ctx);

  phase(`${label}: raw uWebSockets.js relay at saturation (same rooms, same frames)`);
  await connectAll(ctx, 'raw');
  const raw = await runLoad(ctx, 'raw', { cmd: 'saturate', window: o.window }, warmMs, measureMs);
  progress(`  ${describeLoad(raw)}`);
  progress(`  frames: ${describeAccount(raw.account)}`);
  await disconnectAll(ctx);
  const probeAfter = await cpuProbes(pinned, o.quick);
  progress(
    `  CPU probe (M iterations/s per core): before ${probeBefore.map((p) => fmt(p)).join(' / ')}, after ${probeAfter.map((p) => fmt(p)).join(' / ')}`,
  );
  return { probeBefore, probeAfter, pgTxPerSecond: pgRate.txPerSecond, pgMeanMs: pgRate.meanMs, archety, latency, raw };
}

async function main(): Promise<number> {
  const o = parsedOrExit('bench:miniapp', USAGE, () => parseOptions(process.argv.slice(2), process.env));
  const args = process.argv.slice(2).join(' ');
  const script = process.env.npm_lifecycle_event;
  const command =
    (script?.startsWith('bench:')
      ? `npm run ${script}${args && !script.endsWith(':smoke') ? ` -- ${args}` : ''}`
      : `node --import tsx bench/miniapp.ts${args ? ` ${args}` : ''}`) +
    (o.quick && !process.argv.includes('--quick') ? ' (BENCH_QUICK=1)' : '');
  const { cleanups, cleanup, stopHeartbeat } = startRun(o.deadlineMs);

  try {
    phase(`miniapp benchmark (${o.quick ? 'quick' : 'default'} sizes): ${command}`);
    const pinned = hasTaskset();
    const files = fileLimit();
    const needed = o.holdSockets + o.burstSockets + 2000;
    if (files.granted < needed) {
      throw new Error(
        `open-file limit ${files.granted} (hard ${files.hard}) is below the ${needed} this run needs; lower --sockets/--burst`,
      );
    }
    if (pinned) pin(process.pid, GENERATOR_CORE);
    const machine = machineInfo();
    const pinning = pinned
      ? `server and raw relay pinned to core ${SERVER_CORE}, load generators and this process to core ${GENERATOR_CORE} (taskset), PostgreSQL unpinned${oneCoreNote()}`
      : 'taskset not found: nothing pinned';
    const limitNote = `open files: ulimit -n ${files.granted}${files.granted < files.wanted ? ` (${files.wanted} refused: hard limit ${files.hard})` : ''}`;
    progress(`machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}; ${pinning}; ${limitNote}`);

    phase('database');
    const db = await openBenchDatabase(process.env);
    cleanups.push(async () => {
      await db.drop();
      progress(db.owned ? 'dropped the benchmark database' : 'dropped the bench_commit table');
    });
    const pgInfo: PgSettings = await pgSettings(db.url);
    progress(
      `PostgreSQL ${pgInfo.version} (fsync ${pgInfo.fsync}, synchronous_commit ${pgInfo.synchronousCommit}), ${db.owned ? 'fresh database' : 'BENCH_DATABASE_URL'}`,
    );

    phase('starting the Archety server and the raw relay');
    const secret = randomBytes(32).toString('base64url');
    const baseEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' };
    const core = (c: number) => (pinned ? c : null);
    const server = await startServerProcess({
      name: 'archety',
      command: [
        process.execPath,
        ...(o.serverCpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(o.serverCpuProf)}`] : []),
        ...o.serverNodeFlags,
        'bin/archety.js',
        'start',
      ],
      env: {
        ...baseEnv,
        DATABASE_URL: db.url,
        JWT_SECRET: secret,
        PORT: '0',
        HOST: '127.0.0.1',
        // No budgets; no passivation mid-run: the sessions of the socket phase stay live, as they would be.
        ...MINIAPP_BENCH_SERVER_ENV,
        // Held sockets use a minimal client that answers no pings: the longest idle timeout
        // keeps them open however slow the run.
        WS_IDLE_TIMEOUT_S: '960',
        ...o.serverEnv,
      },
      core: core(SERVER_CORE),
      fileLimit: files.granted,
      ready: /archety listening on (http:\/\/[^ "]+)/,
      timeoutMs: 60_000,
      logFile: o.serverLog,
    });
    cleanups.push(async () => {
      await server.stop();
      if (o.serverCpuProf) progress(`server CPU profile written to ${path.resolve(o.serverCpuProf)}`);
    });
    const relay = await startServerProcess({
      name: 'raw relay',
      command: [process.execPath, '--import', 'tsx', 'bench/rawRelay.ts'],
      env: { ...baseEnv, PORT: '0', HOST: '127.0.0.1' },
      core: core(SERVER_CORE),
      fileLimit: files.granted,
      ready: /raw relay listening on (http:\/\/\S+)/,
      timeoutMs: 30_000,
    });
    cleanups.push(() => relay.stop());
    progress(`archety at ${server.url} (pid ${server.pid}), raw relay at ${relay.url} (pid ${relay.pid})`);

    const workers = startWorkers(o.workers, core(GENERATOR_CORE), files.granted, o.workerNodeFlags);
    cleanups.push(async () => {
      // Workers asked to exit get a moment to do so (and write a --cpu-prof) before SIGTERM.
      await Promise.race([Promise.all(workers.map((w) => w.exited)), sleep(3000)]);
      for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
      await Promise.all(workers.map((w) => w.exited));
    });
    await Promise.all(
      workers.map((w, i) =>
        w.request({ cmd: 'init', workerId: i, jwt: { secret, issuer: ISSUER, audience: AUDIENCE } }, 30_000),
      ),
    );

    const userCount = Math.max(o.fanout, Math.ceil(o.holdSockets / o.sessions));
    const users = Array.from({ length: userCount }, (_, k) => `+1555${String(1_000_000 + k).slice(1)}`);
    phase(`creating ${fmt(o.sessions)} trip-planner sessions (${users.length} participants each)`);
    const ownerToken = await mintToken({
      secret: new TextEncoder().encode(secret),
      issuer: ISSUER,
      audience: AUDIENCE,
      sub: users[0],
      ttlS: 3 * 3600,
    });
    const sessions = await createSessions({
      baseUrl: server.url,
      token: ownerToken,
      participants: users,
      count: o.sessions,
      concurrency: 8,
      onProgress: (n) => progress(`  ${fmt(n)} sessions`),
    });
    const ctx: Context = { o, workers, server, relay, sessions, users, dbUrl: db.url, archetyTotal: emptyAccount() };

    const idleMs = o.quick ? 500 : 3000;
    const sockets = await socketsPhase(ctx, idleMs);

    const warm = o.quick ? { warmMs: 300, measureMs: 500 } : { warmMs: 1000, measureMs: 2000 };
    phase('warm-up round (not reported)');
    await connectAll(ctx, 'archety');
    const warmArchety = await runLoad(
      ctx,
      'archety',
      { cmd: 'saturate', window: o.window },
      warm.warmMs,
      warm.measureMs,
    );
    progress(`  archety: ${describeLoad(warmArchety)}`);
    await disconnectAll(ctx);
    await connectAll(ctx, 'raw');
    const warmRaw = await runLoad(ctx, 'raw', { cmd: 'saturate', window: o.window }, warm.warmMs, warm.measureMs);
    progress(`  raw relay: ${describeLoad(warmRaw)}`);
    await disconnectAll(ctx);

    const rounds: Round[] = [];
    for (let r = 1; r <= o.rounds; r++) {
      rounds.push(await loadRound(ctx, `round ${r}/${o.rounds}`, o.warmMs, o.measureMs, pinned));
    }
    const quiet = await quietPhase(ctx);

    phase('checking what was stored');
    const stored = await storedOps(db.url);
    const total = ctx.archetyTotal;
    const durable =
      stored >= total.applied && stored <= total.applied + total.inFlight
        ? `✓ miniapp_ops holds ${fmt(stored)} rows for ${fmt(total.applied)} acknowledged ops (+${fmt(total.inFlight)} in flight)`
        : `✗ miniapp_ops holds ${fmt(stored)} rows but ${fmt(total.applied)} ops were acknowledged (+${fmt(total.inFlight)} in flight)`;
    progress(`all Archety ops of the run: ${describeAccount(total)}`);
    progress(durable);

    const rows = summaryRows(o, rounds, sockets, quiet);
    const table = renderTable(rows);
    const machineLine =
      `Machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, PostgreSQL ${pgInfo.version} ` +
      `(fsync ${pgInfo.fsync}, synchronous_commit ${pgInfo.synchronousCommit}); ${pinning}; ${limitNote}.`;
    const probeLine = `CPU probe (M iterations/s, ${pinned ? `core ${SERVER_CORE} / core ${GENERATOR_CORE}` : 'unpinned'}) per round, before → after: ${rounds
      .map((r) => `${r.probeBefore.map((p) => fmt(p)).join('/')} → ${r.probeAfter.map((p) => fmt(p)).join('/')}`)
      .join('; ')}.`;
    const accountLine = `Op accounting (all Archety ops of the run): ${describeAccount(total)}; ${durable.slice(2)}.`;
    const when = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    process.stdout.write(
      `\n## miniapp benchmark — ${when}\n\n${table}\n\n${machineLine}\n${probeLine}\n${accountLine}\nCommand: \`${command}\`\n\n`,
    );
    const accountsOk = balanced(total) && stored >= total.applied;

    if (o.readme) {
      const section = [
        `### ${when} — \`${command}\``,
        '',
        table,
        '',
        machineLine,
        '',
        probeLine,
        '',
        accountLine,
        '',
        `Sizes: ${fmt(o.rooms)} rooms × ${o.fanout} sockets, ${o.window} ops outstanding per socket, ${o.workers} generator processes; ` +
          `${o.rounds} rounds of ${o.measureMs / 1000} s (saturation) and ${o.latencyMeasureMs / 1000} s (latency) after a warm-up round; ` +
          `${fmt(o.holdSockets)} sockets over ${fmt(o.sessions)} sessions; ${o.bursts} upgrade bursts of ${fmt(o.burstSockets)}` +
          (quiet
            ? `; many quiet sessions: ${fmt(quiet.shape.rooms * quiet.shape.fanout)} sockets over ${fmt(quiet.shape.rooms)} sessions, ${fmt(quiet.rate)} ops/s for ${quiet.measureMs / 1000} s.`
            : '.'),
      ].join('\n');
      addResultsSection(path.join(repoRoot, 'bench/README.md'), README_TEMPLATE, section);
      progress('results written to bench/README.md');
    }
    phase('stopping');
    await Promise.all(workers.map((w) => w.request({ cmd: 'exit' }, 5000).catch(() => undefined)));
    await cleanup();
    if (!accountsOk) {
      progress('op accounting does not balance: the figures above are not trustworthy');
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
