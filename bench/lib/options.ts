/**
 * The benchmark's sizes: the default run (about 3–6 minutes on a 2-core machine) or the quick
 * one (`--quick` or BENCH_QUICK=1: a few sockets, seconds, under 30 s), each overridable.
 */
import { parseArgs } from 'node:util';
import { integerOption } from './commandLine.ts';

export interface BenchOptions {
  quick: boolean;
  /** Measured rounds (after one warm-up round). */
  rounds: number;
  /** Load-generator processes (all on core 1). */
  workers: number;
  /** Rooms (sessions) driven in the saturation, latency and fan-out phases. */
  rooms: number;
  /** Sockets per room: the fan-out of every op. */
  fanout: number;
  /** Ops each socket keeps outstanding in the closed loop. */
  window: number;
  warmMs: number;
  measureMs: number;
  latencyWarmMs: number;
  latencyMeasureMs: number;
  /** Longest wait for outstanding ops after a phase. */
  drainMs: number;
  pgClients: number;
  pgWarmMs: number;
  pgMeasureMs: number;
  /** Sessions created (the socket-holding phase spreads its sockets over all of them). */
  sessions: number;
  /** Sockets held open at once in the memory phase. */
  holdSockets: number;
  /** Sockets per upgrade burst, and how many bursts. */
  burstSockets: number;
  bursts: number;
  /** Upgrades in flight per worker. */
  connectConcurrency: number;
  /**
   * The many-quiet-sessions phase: ops/s in all, spread over `sessions` sessions with
   * ⌈holdSockets ÷ sessions⌉ sockets each (0 skips it), and its measured seconds.
   */
  quietRate: number;
  quietMeasureMs: number;
  /** Write the results section into bench/README.md. */
  readme: boolean;
  /** Directory for a `--cpu-prof` of the Archety server (none when undefined). */
  serverCpuProf: string | undefined;
  /** Extra Node flags for the Archety server (diagnostics, e.g. `--trace-gc`). */
  serverNodeFlags: string[];
  /** File that receives the Archety server's output (none when undefined). */
  serverLog: string | undefined;
  /** Extra environment for the Archety server (experiments, e.g. PG_POOL_MAX=16). */
  serverEnv: Record<string, string>;
  /** Extra Node flags for the load generators (diagnostics, e.g. `--cpu-prof`). */
  workerNodeFlags: string[];
  /** Abort the whole run after this long. */
  deadlineMs: number;
}

const DEFAULTS: BenchOptions = {
  quick: false,
  rounds: 5,
  workers: 4,
  rooms: 100,
  fanout: 10,
  window: 2,
  warmMs: 2000,
  measureMs: 6000,
  latencyWarmMs: 2000,
  latencyMeasureMs: 10_000,
  drainMs: 5000,
  pgClients: 8,
  pgWarmMs: 500,
  pgMeasureMs: 3000,
  sessions: 1000,
  holdSockets: 10_000,
  burstSockets: 5000,
  bursts: 3,
  connectConcurrency: 100,
  quietRate: 2000,
  quietMeasureMs: 20_000,
  readme: true,
  serverCpuProf: undefined,
  serverNodeFlags: [],
  serverLog: undefined,
  serverEnv: {},
  workerNodeFlags: [],
  deadlineMs: 15 * 60_000,
};

const QUICK: Partial<BenchOptions> = {
  quick: true,
  rounds: 1,
  workers: 2,
  rooms: 10,
  fanout: 5,
  warmMs: 500,
  measureMs: 1500,
  latencyWarmMs: 500,
  latencyMeasureMs: 1500,
  drainMs: 3000,
  pgWarmMs: 200,
  pgMeasureMs: 1000,
  sessions: 40,
  holdSockets: 400,
  burstSockets: 200,
  bursts: 1,
  connectConcurrency: 50,
  quietRate: 100,
  quietMeasureMs: 1500,
  readme: false,
  deadlineMs: 240_000,
};

export const USAGE = `Usage: npm run bench:miniapp [-- options]

  --quick              a small, fast run (also BENCH_QUICK=1); does not touch bench/README.md
  --rounds N           measured rounds (default 5)
  --workers N          load-generator processes (default 4)
  --rooms N            rooms driven in the load phases (default 100)
  --fanout N           sockets per room (default 10)
  --window N           ops outstanding per socket at saturation (default 2)
  --measure-s S        measured seconds per saturation phase (default 6)
  --sessions N         sessions created (default 1000)
  --sockets N          sockets held in the memory phase (default 10000)
  --burst N            sockets per upgrade burst (default 5000)
  --quiet-rate N       ops/s in all in the many-quiet-sessions phase, over every session (default 2000; 0 skips it)
  --quiet-s S          measured seconds of that phase (default 20; 0 skips it too)
  --no-readme          do not write bench/README.md
  --server-cpu-prof D  run the Archety server with --cpu-prof, profiles into D
  --server-node-flags=F  extra Node flags for the Archety server, e.g. --server-node-flags=--trace-gc
  --server-log FILE    write the Archety server's output to FILE
  --server-env K=V     extra environment for the Archety server (repeatable), e.g. PG_POOL_MAX=16
  --worker-node-flags=F  extra Node flags for the load generators, e.g. --worker-node-flags=--cpu-prof

Environment: BENCH_DATABASE_URL (use this database instead of creating one),
BENCH_PG_ADMIN_URL (where to create it; default postgres://<os user>@127.0.0.1:5432/postgres).`;

export function parseOptions(argv: string[], env: NodeJS.ProcessEnv): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      rounds: { type: 'string' },
      workers: { type: 'string' },
      rooms: { type: 'string' },
      fanout: { type: 'string' },
      window: { type: 'string' },
      'measure-s': { type: 'string' },
      sessions: { type: 'string' },
      sockets: { type: 'string' },
      burst: { type: 'string' },
      'quiet-rate': { type: 'string' },
      'quiet-s': { type: 'string' },
      'no-readme': { type: 'boolean' },
      'server-cpu-prof': { type: 'string' },
      'server-node-flags': { type: 'string' },
      'server-log': { type: 'string' },
      'server-env': { type: 'string', multiple: true },
      'worker-node-flags': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick === true || env.BENCH_QUICK === '1';
  const o: BenchOptions = { ...DEFAULTS, ...(quick ? QUICK : {}) };
  o.rounds = integerOption('rounds', values.rounds, 1) ?? o.rounds;
  o.workers = integerOption('workers', values.workers, 1) ?? o.workers;
  o.rooms = integerOption('rooms', values.rooms, 1) ?? o.rooms;
  o.fanout = integerOption('fanout', values.fanout, 1) ?? o.fanout;
  o.window = integerOption('window', values.window, 1) ?? o.window;
  const measureS = integerOption('measure-s', values['measure-s'], 1);
  if (measureS) o.measureMs = measureS * 1000;
  o.sessions = integerOption('sessions', values.sessions, 1) ?? o.sessions;
  o.holdSockets = integerOption('sockets', values.sockets, 1) ?? o.holdSockets;
  o.burstSockets = integerOption('burst', values.burst, 1) ?? o.burstSockets;
  o.quietRate = integerOption('quiet-rate', values['quiet-rate'], 0) ?? o.quietRate;
  const quietS = integerOption('quiet-s', values['quiet-s'], 0);
  // No measured seconds: no phase, as with --quiet-rate 0.
  if (quietS === 0) o.quietRate = 0;
  else if (quietS) o.quietMeasureMs = quietS * 1000;
  if (values['no-readme']) o.readme = false;
  o.serverCpuProf = values['server-cpu-prof'];
  o.serverNodeFlags = (values['server-node-flags'] ?? '').split(/\s+/).filter(Boolean);
  o.serverLog = values['server-log'];
  for (const pair of values['server-env'] ?? []) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new Error(`--server-env takes KEY=VALUE, got "${pair}"`);
    o.serverEnv[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  o.workerNodeFlags = (values['worker-node-flags'] ?? '').split(/\s+/).filter(Boolean);
  if (o.rooms > o.sessions) o.sessions = o.rooms;
  return o;
}
