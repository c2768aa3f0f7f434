/**
 * The cluster benchmark's sizes (`bench/cluster.ts`): the default run (about 4 minutes on a
 * 2-core machine) or the quick one (`--quick` or BENCH_QUICK=1: a smoke test of seconds),
 * each overridable from the command line.
 */
import { parseArgs } from 'node:util';
import { integerOption } from './commandLine.ts';

export interface ClusterBenchOptions {
  quick: boolean;
  /** Load-generator processes for the miniapp phases (all on core 1). */
  workers: number;
  /** Rooms (sessions) driven per cluster size; each size gets rooms of its own. */
  rooms: number;
  /** Sockets per room: the fan-out of every op. */
  fanout: number;
  /** Ops each socket keeps outstanding in the closed loop. */
  window: number;
  warmMs: number;
  measureMs: number;
  latencyWarmMs: number;
  latencyMeasureMs: number;
  /** The second latency point: a rate at which neither process is busy (ops/s; at most a quarter of saturation). */
  quietRate: number;
  /** Longest wait for outstanding ops after a phase. */
  drainMs: number;
  /** Relay: generator processes, requests in flight per generator, conversations per size. */
  relayWorkers: number;
  relayConcurrency: number;
  relayConversations: number;
  relayWarmMs: number;
  relayMeasureMs: number;
  /** SIGKILLs of the failover session's owner. */
  kills: number;
  /** SDK clients editing the failover session, spread over the three processes. */
  failoverClients: number;
  /** Milliseconds between two edits of one failover client. */
  failoverEditEveryMs: number;
  /** `ACTOR_LEASE_MS` of every process (the failover goal is 2× it). */
  leaseMs: number;
  /** Write the results section into bench/README.md. */
  readme: boolean;
  /** Directory receiving each process's output (`node-<i>.<start>.log`), none when undefined. */
  serverLogDir: string | undefined;
  /** Abort the whole run after this long. */
  deadlineMs: number;
}

const DEFAULTS: ClusterBenchOptions = {
  quick: false,
  workers: 4,
  rooms: 60,
  fanout: 10,
  window: 2,
  warmMs: 1500,
  measureMs: 5000,
  latencyWarmMs: 1500,
  latencyMeasureMs: 6000,
  quietRate: 1000,
  drainMs: 5000,
  relayWorkers: 3,
  relayConcurrency: 32,
  relayConversations: 3000,
  relayWarmMs: 1000,
  relayMeasureMs: 4000,
  kills: 20,
  failoverClients: 6,
  failoverEditEveryMs: 25,
  leaseMs: 1000,
  readme: true,
  serverLogDir: undefined,
  deadlineMs: 9 * 60_000,
};

const QUICK: Partial<ClusterBenchOptions> = {
  quick: true,
  workers: 2,
  rooms: 6,
  fanout: 3,
  warmMs: 300,
  measureMs: 1000,
  latencyWarmMs: 300,
  latencyMeasureMs: 1000,
  quietRate: 200,
  drainMs: 3000,
  relayWorkers: 2,
  relayConcurrency: 8,
  relayConversations: 100,
  relayWarmMs: 200,
  relayMeasureMs: 800,
  kills: 2,
  failoverClients: 3,
  readme: false,
  deadlineMs: 240_000,
};

export const CLUSTER_USAGE = `Usage: npm run bench:cluster [-- options]

  --quick              a small, fast run (also BENCH_QUICK=1); does not touch bench/README.md
  --rooms N            rooms per cluster size in the miniapp phases (default 60)
  --fanout N           sockets per room (default 10)
  --window N           ops outstanding per socket at saturation (default 2)
  --measure-s S        measured seconds per saturation phase (default 5)
  --kills N            SIGKILLs of the owner in the failover phase (default 20)
  --lease-ms MS        ACTOR_LEASE_MS of every process (default 1000, the least allowed)
  --no-readme          do not write bench/README.md
  --server-log-dir D   write every process's output to D/node-<i>.<start>.log

Needs PostgreSQL (as bench:miniapp) and Redis: BENCH_REDIS_URL (default redis://127.0.0.1:6379).
Environment: BENCH_DATABASE_URL, BENCH_PG_ADMIN_URL (see bench/README.md).`;

export function parseClusterOptions(argv: string[], env: NodeJS.ProcessEnv): ClusterBenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      rooms: { type: 'string' },
      fanout: { type: 'string' },
      window: { type: 'string' },
      'measure-s': { type: 'string' },
      kills: { type: 'string' },
      'lease-ms': { type: 'string' },
      'no-readme': { type: 'boolean' },
      'server-log-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick === true || env.BENCH_QUICK === '1';
  const o: ClusterBenchOptions = { ...DEFAULTS, ...(quick ? QUICK : {}) };
  o.rooms = integerOption('rooms', values.rooms, 1) ?? o.rooms;
  o.fanout = integerOption('fanout', values.fanout, 1) ?? o.fanout;
  o.window = integerOption('window', values.window, 1) ?? o.window;
  const measureS = integerOption('measure-s', values['measure-s'], 1);
  if (measureS) o.measureMs = measureS * 1000;
  o.kills = integerOption('kills', values.kills, 1) ?? o.kills;
  o.leaseMs = integerOption('lease-ms', values['lease-ms'], 1000) ?? o.leaseMs;
  if (values['no-readme']) o.readme = false;
  o.serverLogDir = values['server-log-dir'];
  return o;
}
