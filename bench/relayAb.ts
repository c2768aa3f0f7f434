/**
 * `npm run bench:relay:ab`: the relay's HTTP ingest path of two builds, in one run, in rounds
 * that alternate between them — for a change to that path whose effect is smaller than what
 * this machine does to measurements between minutes (BENCHMARKING.md; `bench:relay`'s rounds
 * moved by up to 45 % on identical code).
 *
 * Each build gets a server of its own (pinned to core 0 like every benchmark server, one idle
 * while the other is measured) and a database of its own, filled once with `--count` events
 * per generator over 50 conversations and drained (every reply delivered). Each round then posts
 * those events again to each build in turn, in alternating order: every one a duplicate, so
 * what is measured is the ingest path alone — HTTP, the token, the body, validation, the inbox
 * statement (`ON CONFLICT DO NOTHING`), the answer — with no processing running behind it.
 * Per round and build: the server's CPU time per request, requests per second (closed loop,
 * 96 in flight), the median request latency; and the CPU probe before each round.
 *
 * With `--processing` every round posts new events instead (over 1,000 conversations, 100 in a
 * quick run) and is measured until every reply is delivered: the whole path per event.
 *
 * Without `--base` the checkout is compared with itself: the noise floor of the comparison.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { mintToken } from '../src/auth/mintToken.ts';
import { integerOption, parsedOrExit } from './lib/commandLine.ts';
import { openBenchDatabase } from './lib/database.ts';
import { cpuProbe, cpuTimeMs, fileLimit, hasTaskset, machineInfo } from './lib/machine.ts';
import { repoRoot, startRelayBenchServer } from './lib/processes.ts';
import { cleanupOnSignals, runMain } from './lib/progress.ts';
import { startRelayWorkers } from './lib/relayWorkers.ts';
import { fmt, median } from './lib/stats.ts';

const HELP = `Usage: npm run bench:relay:ab [-- options]

The relay's HTTP ingest path (POST /v1/relay/events, one event per request) of two builds,
measured in rounds that alternate between them in one run: server CPU per request and
requests per second, on duplicates of stored events (no processing behind them). About a
minute with the default sizes.

Options:
  --base REV|DIR  the build to compare with: a git revision (checked out in a temporary
                  worktree, removed at the end) or a directory holding a checkout with its
                  packages; default: this checkout itself (the comparison's noise floor)
  --rounds N      rounds, each measuring both builds (default 6)
  --count N       requests per generator per round (default 15000; 2 generators)
  --processing    the whole path instead: new events every round, each measured from the
                  first post until every reply is delivered (stored, processed, replied,
                  acknowledged), over 1,000 conversations (100 with --quick)
  --quick         a small run (seconds; the smoke test)
  -h, --help      show this help

Environment:
  BENCH_SERVER_ENV='K=V K=V'      extra environment for both servers
  BENCH_SERVER_NODE_FLAGS='...'   extra Node flags for both servers, e.g. --trace-gc
  BENCH_SERVER_LOG=FILE           where the servers' logs go: FILE.base and FILE.checkout
`;

/** The build to compare with: this checkout (none given), a directory, or a git revision. */
type Base = { kind: 'self' } | { kind: 'dir'; dir: string } | { kind: 'rev'; given: string; rev: string };

interface AbOptions {
  base: Base;
  rounds: number;
  count: number;
  processing: boolean;
  quick: boolean;
}

function parseAbOptions(argv: string[]): AbOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      base: { type: 'string' },
      rounds: { type: 'string' },
      count: { type: 'string' },
      processing: { type: 'boolean' },
      quick: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick === true || process.env.BENCH_QUICK === '1';
  return {
    base: resolveBase(values.base),
    rounds: integerOption('rounds', values.rounds, 1) ?? (quick ? 2 : 6),
    count: integerOption('count', values.count, 100) ?? (quick ? 500 : 15_000),
    processing: values.processing === true,
    quick,
  };
}

function git(...args: string[]): string {
  const r = spawnSync('git', ['-C', repoRoot, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout.trim();
}

function resolveBase(given: string | undefined): Base {
  if (given === undefined) return { kind: 'self' };
  const dir = path.resolve(given);
  if (existsSync(path.join(dir, 'bin/archety.js'))) return { kind: 'dir', dir };
  const r = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--verify', '--quiet', `${given}^{commit}`], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`--base ${given}: neither a directory holding a checkout nor a git revision`);
  return { kind: 'rev', given, rev: r.stdout.trim() };
}

const options = parsedOrExit('bench:relay:ab', HELP, () => parseAbOptions(process.argv.slice(2)));
const SECRET = 'bench-relay-ab-secret-bench-relay-ab-secret';
/**
 * Conversations per generator: few for duplicates (the fill is quick), more for processing (as
 * many as a burst meets), except in a quick run (each new conversation is an activation).
 */
const conversations = options.processing && !options.quick ? 500 : 50;
const CONCURRENCY = 48;
const pinning = hasTaskset();
const core = (n: number) => (pinning ? n : null);
const log = (msg: string) => process.stdout.write(`[bench:relay:ab] ${msg}\n`);
const { cleanups, cleanup } = cleanupOnSignals(log, 'stopping the servers and dropping the benchmark databases');

/** The directory of the base build: this checkout, the directory given, or a temporary worktree of the revision. */
function baseCheckout(base: Base): { dir: string; label: string } {
  if (base.kind === 'self') return { dir: repoRoot, label: 'this checkout (again)' };
  if (base.kind === 'dir') return { dir: base.dir, label: base.dir };
  const { given, rev } = base;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'archety-ab-'));
  git('worktree', 'add', '--detach', dir, rev);
  cleanups.push(() => {
    git('worktree', 'remove', '--force', dir);
    rmSync(dir, { recursive: true, force: true });
  });
  // The base runs with this checkout's packages (a change of packages is not what this compares).
  symlinkSync(path.join(repoRoot, 'node_modules'), path.join(dir, 'node_modules'));
  return { dir, label: `${given} (${rev.slice(0, 10)})` };
}

interface Build {
  label: string;
  url: string;
  pid: number;
  sends: number;
  accepted: number;
  usPerRequest: number[];
  perSecond: number[];
  p50: number[];
}

async function main(): Promise<void> {
  const machine = machineInfo();
  log(
    `machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}; pinning ${pinning ? 'on' : 'off (no taskset)'}`,
  );
  const base = baseCheckout(options.base);
  const head = git('rev-parse', '--short=10', 'HEAD');
  const dirty = git('status', '--porcelain', '--untracked-files=no') !== '';
  const checkouts = [
    { dir: base.dir, label: `base: ${base.label}` },
    { dir: repoRoot, label: `this checkout (${head}${dirty ? ', with uncommitted changes' : ''})` },
  ];
  const workers = startRelayWorkers(2, core(1), fileLimit().granted);
  cleanups.push(() => {
    for (const w of workers) w.child.kill();
  });
  const token = await mintToken({
    secret: new TextEncoder().encode(SECRET),
    issuer: 'archety',
    audience: 'archety',
    sub: 'bench-relay-ab',
    role: 'relay',
    ttlS: 7200,
  });
  const builds: Build[] = [];
  const nodeFlags = (process.env.BENCH_SERVER_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  for (const [i, c] of checkouts.entries()) {
    const db = await openBenchDatabase(process.env);
    cleanups.push(() => db.drop());
    const logFile = process.env.BENCH_SERVER_LOG;
    const server = await startRelayBenchServer({
      program: [...nodeFlags, path.join(c.dir, 'bin/archety.js')],
      databaseUrl: db.url,
      secret: SECRET,
      core: core(0),
      ...(logFile ? { logFile: `${logFile}.${i === 0 ? 'base' : 'checkout'}` } : {}),
    });
    cleanups.push(() => server.stop());
    const build: Build = {
      label: c.label,
      url: server.url,
      pid: server.pid,
      sends: 0,
      accepted: 0,
      usPerRequest: [],
      perSecond: [],
      p50: [],
    };
    builds.push(build);
    log(`${c.label}: server ${server.url} (pid ${server.pid}), database ${new URL(db.url).pathname.slice(1)}`);
    // Every reply is acknowledged, as a relay does; the fill is drained when each is delivered.
    const relay = new WebSocket(`${server.url.replace('http', 'ws')}/v1/relay`, ['archety.v1', `bearer.${token}`]);
    relay.on('message', (data) => {
      const f = JSON.parse(data.toString());
      if (f.type !== 'send') return;
      build.sends++;
      relay.send(JSON.stringify({ type: 'ack', id: f.id }));
    });
    cleanups.push(() => relay.close());
    await new Promise((resolve, reject) => {
      relay.once('open', resolve);
      relay.once('error', reject);
    });
  }

  const drained = async (b: Build) => {
    const started = Date.now();
    while (b.sends < b.accepted) {
      if (Date.now() - started > 300_000) throw new Error(`${b.label}: replies still missing after 5 minutes`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  /**
   * Posts `--count` events per generator to `build`, under `prefix` (the same prefix: the same
   * ids), and measures it when `measured`: duplicates, or with `--processing` new events, until
   * every reply is delivered.
   */
  const post = async (build: Build, prefix: string, measured: boolean) => {
    const cpu0 = cpuTimeMs(build.pid);
    const started = performance.now();
    const results = await Promise.all(
      workers.map((w, i) =>
        w.run({
          url: build.url,
          token,
          mode: 'closed',
          concurrency: CONCURRENCY,
          rate: 0,
          durationMs: 600_000,
          batch: 1,
          senderFrom: i * conversations,
          senders: conversations,
          prefix: `${prefix}-${i}`,
          count: options.count,
        }),
      ),
    );
    const posted = performance.now() - started;
    const requests = results.reduce((n, r) => n + r.requests, 0);
    const accepted = results.reduce((n, r) => n + r.accepted, 0);
    const failed = results.reduce((n, r) => n + r.failed, 0);
    build.accepted += accepted;
    if (failed) throw new Error(`${build.label}: ${failed} requests failed`);
    if (!measured) return `${fmt(accepted)} events stored`;
    if (options.processing && accepted !== requests)
      throw new Error(`${build.label}: ${requests - accepted} events were not new`);
    if (!options.processing && accepted)
      throw new Error(`${build.label}: ${accepted} events were new in a round of duplicates`);
    if (options.processing) await drained(build);
    const ms = performance.now() - started;
    const cpu = cpuTimeMs(build.pid) - cpu0;
    const latencies = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
    build.usPerRequest.push((cpu * 1000) / requests);
    build.perSecond.push((requests * 1000) / ms);
    build.p50.push(latencies[latencies.length >> 1] ?? Number.NaN);
    const last = (a: number[]) => a[a.length - 1];
    const what = options.processing
      ? `µs of server CPU per event (stored, processed, replied), ${fmt(last(build.perSecond))} events/s to the last reply (acknowledged at ${fmt((requests * 1000) / posted)}/s)`
      : `µs of server CPU per request, ${fmt(last(build.perSecond))} requests/s`;
    return `${last(build.usPerRequest).toFixed(1)} ${what}, p50 ${last(build.p50).toFixed(1)} ms (server busy ${((cpu / ms) * 100).toFixed(0)} %)`;
  };

  try {
    for (const b of builds) {
      log(`${b.label}: storing ${fmt(2 * options.count)} events over ${fmt(2 * conversations)} conversations…`);
      log(`  ${await post(b, 'ab', false)}`);
      await drained(b);
    }
    const probes: number[] = [];
    for (let r = 0; r < options.rounds; r++) {
      probes.push(await cpuProbe(core(0), options.quick));
      log(`round ${r + 1}/${options.rounds} (CPU probe ${probes[r].toFixed(0)} M iterations/s on core 0)`);
      // Alternating order: neither build always measures right after the other's round.
      for (const b of r % 2 ? [...builds].reverse() : builds)
        log(`  ${b.label}: ${await post(b, options.processing ? `r${r}` : 'ab', true)}`);
    }
    const [before, after] = builds;
    const row = (b: Build) =>
      `| ${b.label} | ${median(b.usPerRequest).toFixed(1)} (${Math.min(...b.usPerRequest).toFixed(1)}–${Math.max(...b.usPerRequest).toFixed(1)}) | ${fmt(median(b.perSecond))} | ${median(b.p50).toFixed(1)} |`;
    console.log(
      [
        '',
        options.processing
          ? '| build | server CPU µs per event, stored to replied, median (rounds) | events/s to the last reply, median | ack p50 ms |'
          : '| build | server CPU µs per request, median (rounds) | requests/s, median | p50 ms |',
        '|---|---:|---:|---:|',
        row(before),
        row(after),
        '',
        `This checkout ÷ base: CPU per ${options.processing ? 'event' : 'request'} ${(median(after.usPerRequest) / median(before.usPerRequest)).toFixed(2)}×, ${options.processing ? 'events' : 'requests'}/s ${(median(after.perSecond) / median(before.perSecond)).toFixed(2)}×`,
        `Rounds: ${options.rounds}, ${fmt(2 * options.count)} ${options.processing ? 'new' : 'duplicate'} events per build per round over ${fmt(2 * conversations)} conversations, ${2 * CONCURRENCY} requests in flight; CPU probe ${probes.map((p) => p.toFixed(0)).join(', ')}`,
        `Machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}; servers on core 0, generators on core 1${pinning ? '' : ' (unpinned: no taskset)'}`,
        '',
      ].join('\n'),
    );
  } finally {
    await cleanup();
  }
}

runMain(main, cleanup);
