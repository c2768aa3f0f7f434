/**
 * `npm run bench:peers`: Archety against the servers people would pick instead — Socket.IO,
 * Colyseus, Hocuspocus — and against the limit, a raw uWebSockets.js relay, on the same work
 * in one run (issue 4).
 *
 * The work: R rooms × C clients (200 × 10), every client authenticated with the server's own
 * mechanism, each inserting its own budget item in the room's trip and then editing its label;
 * the server applies each edit to the room's state and broadcasts it to the whole room. Per
 * server: a ladder of offered rates up to saturation; then, in each of several rounds (servers
 * in a rotating order, each in a fresh process): the clients' memory, saturated edits/s and
 * frames/s (closed loop), and edit → own-echo latency at the server's own half saturation and
 * at a common rate below everyone's saturation (open loop); the server's CPU per edit and its
 * RSS; errors and drops. Every edit is accounted for.
 *
 * The server under test is pinned to core 0 and the load generators (`bench/peersWorker.ts`,
 * each server's own client library) to core 1; PostgreSQL is unpinned (BENCHMARKING.md). Only
 * 127.0.0.1; bounded in count and time; a progress line at least every few seconds.
 * `--quick` is the smoke run (< 60 s). bench/README.md describes it in full.
 */

import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { mintToken } from '../src/auth/mintToken.ts';
import { emptyAccount } from './lib/accounting.ts';
import { createSessions } from './lib/archetyApi.ts';
import { parsedOrExit } from './lib/commandLine.ts';
import { GENERATOR_CORE, SERVER_CORE } from './lib/context.ts';
import { openBenchDatabase, pgSettings } from './lib/database.ts';
import { cpuProbes, fileLimit, hasTaskset, machineInfo, pin } from './lib/machine.ts';
import { oneCoreNote, repoRoot, type ServerProcess, startWorkers } from './lib/processes.ts';
import { currentPhaseName, phase, progress, sleep, startRun } from './lib/progress.ts';
import { addResultsSection, README_TEMPLATE } from './lib/report.ts';
import { fmt } from './lib/stats.ts';
import { ALL_PEERS, type PeersOptions, parsePeersOptions, USAGE } from './peers/options.ts';
import {
  type Ctx,
  connectAll,
  describePhase,
  disconnectAll,
  type LadderStep,
  ladderSaturation,
  runLadder,
  runLoad,
  type Target,
} from './peers/phases.ts';
import type { PeerName, PeerRequest, PeerRoom } from './peers/protocol.ts';
import { waitForQuiet } from './peers/quiet.ts';
import {
  accountLines,
  accountsBalance,
  goalLines,
  ladderLines,
  probeLine,
  renderPeersTable,
  type ServerResult,
  type ServerRound,
} from './peers/report.ts';
import { missingPackages, PEERS_INSTALL_COMMAND, packageVersions, SPECS, startPeer } from './peers/servers.ts';

const ISSUER = 'archety';
const AUDIENCE = 'archety';

/** Rooms dealt round-robin to the workers (all clients of a room in one worker). */
function dealRooms(ids: string[], users: string[], workers: number): PeerRoom[][] {
  const out: PeerRoom[][] = Array.from({ length: workers }, () => []);
  for (const [r, id] of ids.entries()) out[r % workers].push({ id, users });
  return out;
}

/** `n` rounded down to two significant digits. */
function roundDown(n: number): number {
  const unit = 10 ** Math.max(0, Math.floor(Math.log10(Math.max(1, n))) - 1);
  return Math.max(1, Math.floor(n / unit) * unit);
}

async function main(): Promise<number> {
  const o: PeersOptions = parsedOrExit('bench:peers', USAGE, () =>
    parsePeersOptions(process.argv.slice(2), process.env),
  );
  const missing = missingPackages(o.servers);
  if (missing.length) {
    process.stderr.write(`bench:peers: ${missing.join(', ')} not installed; run: ${PEERS_INSTALL_COMMAND}\n`);
    return 1;
  }
  const args = process.argv.slice(2);
  const command = `npm run bench:peers${args.length ? ` -- ${args.join(' ')}` : ''}`;
  const { cleanups, cleanup, stopHeartbeat } = startRun(o.deadlineMs);

  try {
    phase(`peers benchmark (${o.quick ? 'quick' : 'default'} sizes): ${command}`);
    const versions = o.servers.map((p) => `${SPECS[p].label}: ${packageVersions(SPECS[p].packages).join(', ')}`);
    const pinned = hasTaskset();
    const core = (c: number) => (pinned ? c : null);
    const files = fileLimit();
    const needed = o.rooms * o.clients * 2 + 1000;
    if (files.granted < needed) {
      throw new Error(
        `open-file limit ${files.granted} is below the ${needed} this run needs; lower --rooms/--clients`,
      );
    }
    const contention: string[] = [];
    const awaitQuiet = async (where: string) => {
      if (o.quick) return;
      const q = await waitForQuiet(o.quietWaitMs);
      if (q.waitedMs > 1000) contention.push(`waited ${fmt(q.waitedMs / 1000)} s for other benchmarks before ${where}`);
      if (q.busy.length) contention.push(`measured ${where} WHILE another benchmark ran: ${q.busy[0]}`);
    };
    await awaitQuiet('the start');
    if (pinned) pin(process.pid, GENERATOR_CORE);
    const machine = machineInfo();
    const pinning = pinned
      ? `server under test pinned to core ${SERVER_CORE}, load generators and this process to core ${GENERATOR_CORE} (taskset), PostgreSQL unpinned${oneCoreNote()}`
      : 'taskset not found: nothing pinned';
    progress(`machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}; ${pinning}`);
    for (const v of versions) progress(`  ${v}`);

    phase('database');
    const db = await openBenchDatabase(process.env);
    cleanups.push(() => db.drop());
    const pgInfo = await pgSettings(db.url);
    progress(`PostgreSQL ${pgInfo.version} (fsync ${pgInfo.fsync}, synchronous_commit ${pgInfo.synchronousCommit})`);

    const secret = randomBytes(32).toString('base64url');
    const workers = startWorkers<PeerRequest>(
      o.workers,
      core(GENERATOR_CORE),
      files.granted,
      o.workerNodeFlags,
      'bench/peersWorker.ts',
    );
    cleanups.push(async () => {
      await Promise.all(workers.map((w) => w.request({ cmd: 'exit' }, 3000).catch(() => undefined)));
      await Promise.race([Promise.all(workers.map((w) => w.exited)), sleep(3000)]);
      for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
    });
    await Promise.all(
      workers.map((w, i) =>
        w.request({ cmd: 'init', workerId: i, jwt: { secret, issuer: ISSUER, audience: AUDIENCE } }, 30_000),
      ),
    );

    const users = Array.from({ length: o.clients }, (_, k) => `+1555${String(1_000_000 + k).slice(1)}`);
    const tripIds = Array.from({ length: o.rooms }, (_, r) => `trip-${r}`);
    const rooms = Object.fromEntries(ALL_PEERS.map((p) => [p, dealRooms(tripIds, users, o.workers)])) as Record<
      PeerName,
      PeerRoom[][]
    >;
    const totals = Object.fromEntries(ALL_PEERS.map((p) => [p, emptyAccount()])) as Ctx['totals'];
    const ctx: Ctx = { o, workers, rooms, totals };
    let sessionsCreated = false;

    let current: ServerProcess | undefined;
    cleanups.push(async () => {
      await current?.stop();
    });
    const start = async (peer: PeerName): Promise<Target> => {
      const server = await startPeer(peer, {
        core: core(SERVER_CORE),
        fileLimit: files.granted,
        jwtSecret: secret,
        databaseUrl: db.url,
        nodeFlags: o.serverNodeFlags,
      });
      current = server;
      progress(`  ${SPECS[peer].label} at ${server.url} (pid ${server.pid})`);
      if (peer === 'archety' && !sessionsCreated) {
        const token = await mintToken({
          secret: new TextEncoder().encode(secret),
          issuer: ISSUER,
          audience: AUDIENCE,
          sub: users[0],
          ttlS: 3 * 3600,
        });
        const ids = await createSessions({
          baseUrl: server.url,
          token,
          participants: users,
          count: o.rooms,
          concurrency: 8,
        });
        rooms.archety = dealRooms(ids, users, o.workers);
        sessionsCreated = true;
        progress(`  created ${fmt(ids.length)} trip-planner sessions (POST /v1/miniapps)`);
      }
      return { peer, server };
    };
    const stop = async () => {
      await current?.stop();
      current = undefined;
    };
    const probes = () => cpuProbes(pinned, o.quick);

    const ladders = {} as Record<PeerName, LadderStep[]>;
    for (const peer of o.servers) {
      await awaitQuiet(`the ${SPECS[peer].label} ladder`);
      phase(`${SPECS[peer].label}: warm-up, then the ladder of offered rates`);
      const t = await start(peer);
      await connectAll(ctx, t);
      const warm = await runLoad(ctx, t, { kind: 'closed' }, o.warmupMs / 2, o.warmupMs / 2);
      progress(`  warm-up (closed loop, not reported): ${describePhase(warm)}`);
      ladders[peer] = await runLadder(ctx, t);
      await disconnectAll(ctx);
      await stop();
    }
    const commonRate = roundDown(0.5 * Math.min(...o.servers.map((p) => ladderSaturation(ladders[p]))));
    progress(`common offered rate: ${fmt(commonRate)} edits/s (half of the lowest saturation on the ladders)`);

    const rounds = Object.fromEntries(o.servers.map((p) => [p, [] as ServerRound[]])) as Record<
      PeerName,
      ServerRound[]
    >;
    for (let r = 0; r < o.rounds; r++) {
      const order = o.servers.map((_, i) => o.servers[(i + r) % o.servers.length]);
      for (const peer of order) {
        await awaitQuiet(`round ${r + 1} of ${SPECS[peer].label}`);
        const label = `round ${r + 1}/${o.rounds}: ${SPECS[peer].label}`;
        phase(label);
        const probeBefore = await probes();
        const t = await start(peer);
        const connect = await connectAll(ctx, t);
        progress(
          `  RSS ${fmt(connect.rssBeforeKiB / 1024)} → ${fmt(connect.rssAfterKiB / 1024)} MiB: ${fmt(connect.perSocketKiB, 1)} KiB per client`,
        );
        phase(`${label}: saturation (closed loop, ${o.window} edit${o.window > 1 ? 's' : ''} outstanding per client)`);
        const saturation = await runLoad(ctx, t, { kind: 'closed' }, o.warmMs, o.measureMs);
        progress(`  ${describePhase(saturation)}`);
        const halfRate = Math.max(1, Math.round(saturation.editsPerSecond / 2));
        phase(`${label}: own half saturation (${fmt(halfRate)} edits/s, open loop)`);
        const half = await runLoad(ctx, t, { kind: 'open', rate: halfRate }, o.latencyWarmMs, o.latencyMeasureMs);
        progress(`  ${describePhase(half)}`);
        phase(`${label}: common rate (${fmt(commonRate)} edits/s, open loop)`);
        const common = await runLoad(ctx, t, { kind: 'open', rate: commonRate }, o.latencyWarmMs, o.latencyMeasureMs);
        progress(`  ${describePhase(common)}`);
        await disconnectAll(ctx);
        await stop();
        const probeAfter = await probes();
        progress(
          `  CPU probe (M iterations/s, core 0 / core 1): ${probeBefore.map((p) => fmt(p)).join('/')} → ${probeAfter.map((p) => fmt(p)).join('/')}`,
        );
        rounds[peer].push({ probeBefore, probeAfter, connect, saturation, half, common });
      }
    }

    const results: ServerResult[] = o.servers.map((peer) => ({
      peer,
      ladder: ladders[peer],
      rounds: rounds[peer],
      total: totals[peer],
    }));
    const table = renderPeersTable(results, commonRate);
    const goals = goalLines(results);
    const when = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const machineLine =
      `${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, kernel ${machine.kernel}, PostgreSQL ${pgInfo.version} ` +
      `(fsync ${pgInfo.fsync}, synchronous_commit ${pgInfo.synchronousCommit}); ${pinning}`;
    const sizes =
      `${fmt(o.rooms)} rooms × ${o.clients} clients = ${fmt(o.rooms * o.clients)} authenticated clients, ${o.workers} generator processes; ` +
      `ladder from ${fmt(o.ladderStart)} edits/s ×${o.ladderFactor} per step (${o.ladderWarmMs / 1000} s + ${o.ladderMeasureMs / 1000} s each); ` +
      `${o.rounds} round${o.rounds > 1 ? 's' : ''} of: saturation ${o.warmMs / 1000} s + ${o.measureMs / 1000} s, half saturation and common rate ${o.latencyWarmMs / 1000} s + ${o.latencyMeasureMs / 1000} s each`;
    const contentionLine = contention.length
      ? `Other benchmarks: ${contention.join('; ')}.`
      : 'Other benchmarks: none ran during the measurements.';
    const out = [
      `## peers benchmark — ${when}`,
      '',
      table,
      '',
      'Goals (issue 4; saturated edits/s measured, and projected from server CPU per edit):',
      ...goals,
      '',
      `Ladders (offered → applied edits/s):`,
      ...ladderLines(results),
      '',
      'Edit accounting (sent = applied + conflict + error + in flight), every phase of the run:',
      ...accountLines(results),
      '',
      `Machine: ${machineLine}.`,
      `Sizes: ${sizes}.`,
      probeLine(results),
      contentionLine,
      `Versions: ${versions.join('; ')}.`,
      `Command: \`${command}\``,
    ].join('\n');
    process.stdout.write(`\n${out}\n\n`);
    if (o.readme) {
      addResultsSection(
        path.join(repoRoot, 'bench/README.md'),
        README_TEMPLATE,
        out.replace(/^## peers benchmark — (.*)$/m, '### peers — $1'),
      );
      progress('results written to bench/README.md');
    }
    phase('stopping');
    await cleanup();
    if (!accountsBalance(results)) {
      progress('edit accounting does not balance: the figures above are not trustworthy');
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
