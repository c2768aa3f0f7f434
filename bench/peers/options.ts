/**
 * Sizes of `npm run bench:peers`: the default run (R = 200 rooms × C = 10 clients, 3 rounds;
 * about 12–15 minutes on 2 cores) or the quick one (`--quick`: a few clients, one short
 * round, under a minute), each overridable.
 */
import { parseArgs } from 'node:util';
import { integerOption } from '../lib/commandLine.ts';
import type { PeerName } from './protocol.ts';

export const ALL_PEERS: PeerName[] = ['archety', 'raw', 'socketio', 'colyseus', 'hocuspocus'];

export interface PeersOptions {
  quick: boolean;
  rooms: number;
  /** Clients per room: the fan-out of every edit. */
  clients: number;
  /** Load-generator processes (all on core 1). */
  workers: number;
  /** Measured rounds (every server in each, in a rotating order). */
  rounds: number;
  servers: PeerName[];
  /** Edits outstanding per client in the closed loop (saturation). */
  window: number;
  /** The ladder of offered rates: first rate, factor between steps, most steps. */
  ladderStart: number;
  ladderFactor: number;
  ladderSteps: number;
  ladderWarmMs: number;
  ladderMeasureMs: number;
  /** Closed-loop warm-up before the ladder (not reported). */
  warmupMs: number;
  warmMs: number;
  measureMs: number;
  latencyWarmMs: number;
  latencyMeasureMs: number;
  /** Longest wait for the last echoes after a phase. */
  drainMs: number;
  /** Idle time between opening the clients and reading the server's RSS. */
  idleMs: number;
  connectConcurrency: number;
  /** Longest wait for other benchmarks on the machine to finish before measuring. */
  quietWaitMs: number;
  readme: boolean;
  /** Extra Node flags for the servers under test (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`). */
  serverNodeFlags: string[];
  /** Extra Node flags for the load generators (diagnostics). */
  workerNodeFlags: string[];
  deadlineMs: number;
}

const DEFAULTS: PeersOptions = {
  quick: false,
  rooms: 200,
  clients: 10,
  workers: 4,
  rounds: 3,
  servers: ALL_PEERS,
  window: 1,
  ladderStart: 500,
  ladderFactor: 1.6,
  ladderSteps: 12,
  ladderWarmMs: 1000,
  ladderMeasureMs: 2000,
  warmupMs: 2000,
  warmMs: 1500,
  measureMs: 4000,
  latencyWarmMs: 1500,
  latencyMeasureMs: 5000,
  drainMs: 4000,
  idleMs: 2000,
  connectConcurrency: 50,
  quietWaitMs: 30 * 60_000,
  readme: true,
  serverNodeFlags: [],
  workerNodeFlags: [],
  deadlineMs: 40 * 60_000,
};

const QUICK: Partial<PeersOptions> = {
  quick: true,
  rooms: 6,
  clients: 4,
  workers: 2,
  rounds: 1,
  ladderStart: 50,
  ladderFactor: 3,
  ladderSteps: 1,
  ladderWarmMs: 200,
  ladderMeasureMs: 400,
  warmupMs: 300,
  warmMs: 200,
  measureMs: 500,
  latencyWarmMs: 200,
  latencyMeasureMs: 500,
  drainMs: 2000,
  idleMs: 200,
  connectConcurrency: 12,
  quietWaitMs: 0,
  readme: false,
  deadlineMs: 240_000,
};

export const USAGE = `Usage: npm run bench:peers [-- options]

  --quick              a small, fast run (< 60 s; also BENCH_QUICK=1); does not touch bench/README.md
  --rooms N            rooms (default 200)
  --clients N          clients per room (default 10)
  --workers N          load-generator processes (default 4)
  --rounds N           measured rounds (default 3)
  --servers a,b        a subset of ${ALL_PEERS.join(',')}
  --window N           edits outstanding per client at saturation (default 1)
  --measure-s S        measured seconds per saturation phase (default 4)
  --ladder-steps N     most steps of the ladder of offered rates (default 12)
  --no-readme          do not write bench/README.md
  --server-node-flags="F"  extra Node flags for the servers under test (also BENCH_SERVER_NODE_FLAGS),
                       e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  --worker-node-flags="F"  extra Node flags for the load generators (diagnostics)

Environment: BENCH_DATABASE_URL (use this database instead of creating one),
BENCH_PG_ADMIN_URL (where to create it; default postgres://<os user>@127.0.0.1:5432/postgres).`;

export function parsePeersOptions(argv: string[], env: NodeJS.ProcessEnv): PeersOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      rooms: { type: 'string' },
      clients: { type: 'string' },
      workers: { type: 'string' },
      rounds: { type: 'string' },
      servers: { type: 'string' },
      window: { type: 'string' },
      'measure-s': { type: 'string' },
      'ladder-steps': { type: 'string' },
      'no-readme': { type: 'boolean' },
      'server-node-flags': { type: 'string' },
      'worker-node-flags': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick === true || env.BENCH_QUICK === '1';
  const o: PeersOptions = { ...DEFAULTS, ...(quick ? QUICK : {}) };
  o.rooms = integerOption('rooms', values.rooms, 1) ?? o.rooms;
  o.clients = integerOption('clients', values.clients, 2) ?? o.clients;
  o.workers = integerOption('workers', values.workers, 1) ?? o.workers;
  o.rounds = integerOption('rounds', values.rounds, 1) ?? o.rounds;
  o.window = integerOption('window', values.window, 1) ?? o.window;
  const measureS = integerOption('measure-s', values['measure-s'], 1);
  if (measureS) o.measureMs = measureS * 1000;
  o.ladderSteps = integerOption('ladder-steps', values['ladder-steps'], 1) ?? o.ladderSteps;
  if (values.servers) {
    const names = values.servers.split(',').map((s) => s.trim());
    for (const n of names) if (!ALL_PEERS.includes(n as PeerName)) throw new Error(`unknown server "${n}"`);
    o.servers = ALL_PEERS.filter((p) => names.includes(p));
  }
  if (values['no-readme'] || o.servers.length < ALL_PEERS.length) o.readme = false;
  o.serverNodeFlags = (values['server-node-flags'] ?? env.BENCH_SERVER_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
  o.workerNodeFlags = (values['worker-node-flags'] ?? '').split(/\s+/).filter(Boolean);
  if (o.serverNodeFlags.length || o.workerNodeFlags.length) o.readme = false;
  return o;
}
