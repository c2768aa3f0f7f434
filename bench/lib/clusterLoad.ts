/**
 * The cluster benchmark's load phases, on the miniapp generators of `bench:miniapp`
 * (`bench/loadWorker.ts`) and the relay generators of `bench:relay` (`bench/relayWorker.ts`):
 *
 * - Placement: generator w opens its sockets on process w mod N (whole rooms: a generator's
 *   room shares one item list), and each room is first read through the process chosen to own
 *   it, which takes its lease. With N = 2, the first half of the generators have their rooms
 *   owned where their sockets are, the second half on the other process, so one phase yields
 *   the latency of both paths side by side; with N = 3, a generator's rooms cycle over the
 *   three processes. Either way (N − 1)/N of the ops are forwarded, as behind a load balancer
 *   that places sockets at random.
 * - Figures: ops/s, the summed CPU time of every process over the measured window per op (so
 *   forwarding shows as cost), each process's share of a core, Redis commands in the window.
 */
import WebSocket from 'ws';
import { addAccount, describeAccount, emptyAccount } from './accounting.ts';
import type { BenchNode } from './clusterNodes.ts';
import type { ClusterBenchOptions } from './clusterOptions.ts';
import { type CommandCounts, countsBetween, type RedisProbe } from './clusterRedis.ts';
import { cpuTimeMs } from './machine.ts';
import type { Worker } from './processes.ts';
import { at, progress, sleep } from './progress.ts';
import type { ConnectResult, LoadResult, OpAccount, RoomSpec } from './protocol.ts';
import type { RelayWorker } from './relayWorkers.ts';
import { fmt, sum } from './stats.ts';

export interface ClusterLoadContext {
  o: ClusterBenchOptions;
  workers: Worker[];
  redis: RedisProbe;
  /** A participant's token, for reading sessions through a chosen process. */
  token: string;
  /** Every miniapp op of the run. */
  total: OpAccount;
}

/** A generator's sockets: the process they open on, and each room with the process that owns it. */
export interface Placement {
  node: BenchNode;
  rooms: { spec: RoomSpec; owner: BenchNode }[];
  /** Every room of this generator is owned where its sockets are. */
  local: boolean;
}

/** Deals `rooms` to the generators and picks every room's owner (see the file's comment). */
export function place(nodes: BenchNode[], workers: number, rooms: RoomSpec[]): Placement[] {
  const n = nodes.length;
  const out: Placement[] = Array.from({ length: workers }, (_, w) => ({ node: nodes[w % n], rooms: [], local: true }));
  rooms.forEach((spec, r) => {
    const w = r % workers;
    const j = Math.floor(r / workers);
    const offset = n === 2 ? (w < workers / 2 ? 0 : 1) : j % n;
    out[w].rooms.push({ spec, owner: nodes[(w + offset) % n] });
  });
  for (const p of out) p.local = p.rooms.every((room) => room.owner === p.node);
  return out;
}

/** Runs each room on its chosen owner (a read through it takes the lease) and checks the leases. */
export async function anchorOwners(ctx: ClusterLoadContext, placements: Placement[]): Promise<void> {
  const rooms = placements.flatMap((p) => p.rooms);
  let next = 0;
  const lane = async () => {
    while (next < rooms.length) {
      const { spec, owner } = rooms[next++];
      const res = await fetch(`${owner.url}/v1/miniapps/${spec.sessionId}`, {
        headers: { authorization: `Bearer ${ctx.token}` },
      });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`GET /v1/miniapps/${spec.sessionId} on ${owner.name}: ${res.status}`);
      const holder = await ctx.redis.leaseHolder(`miniapp:${spec.sessionId}`);
      if (holder !== owner.processId)
        throw new Error(`session ${spec.sessionId} was read through ${owner.name} but its lease names ${holder}`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, lane));
}

export async function connectPlaced(ctx: ClusterLoadContext, placements: Placement[]): Promise<void> {
  const results = await Promise.all(
    ctx.workers.map((w, i) =>
      w.request<ConnectResult>(
        {
          cmd: 'connect',
          target: 'archety',
          baseUrl: placements[i].node.url,
          rooms: placements[i].rooms.map((r) => r.spec),
          concurrency: 50,
        },
        60_000,
      ),
    ),
  );
  const failed = sum(results.map((r) => r.failed));
  if (failed) throw new Error(`${failed} load sockets could not be opened`);
  const setup = results.reduce((acc, r) => addAccount(acc, r.setup), emptyAccount());
  addAccount(ctx.total, setup);
  progress(`  budget items inserted: ${describeAccount(setup)}`);
}

export async function disconnectAll(ctx: ClusterLoadContext): Promise<void> {
  await Promise.all(ctx.workers.map((w) => w.request({ cmd: 'disconnect' }, 30_000)));
}

/** What one measured window cost the whole cluster. */
export interface ClusterCost {
  /** Summed CPU time of every process over the window, ms. */
  cpuMs: number;
  /** Each process's CPU time over the window ÷ the window, % of one core. */
  cpuPctByNode: number[];
  /** Redis commands during the window, by command, largest first (server-wide). */
  redis: [string, number][];
  /** PUBLISHes on the run's own channels during the window (exact). */
  publishes: number;
  windowMs: number;
}

/** Reads CPU and Redis counters now: `finish()` later gives what the window between cost. */
export async function startCost(nodes: BenchNode[], redis: RedisProbe): Promise<{ finish(): Promise<ClusterCost> }> {
  const t0 = performance.now();
  const cpu0 = nodes.map((n) => cpuTimeMs(n.pid));
  const counts0: CommandCounts = await redis.commandCounts();
  const published0 = redis.published();
  return {
    async finish() {
      const cpu1 = nodes.map((n) => cpuTimeMs(n.pid));
      const counts1 = await redis.commandCounts();
      const publishes = redis.published() - published0;
      const windowMs = performance.now() - t0;
      const byNode = cpu1.map((c, i) => c - cpu0[i]);
      return {
        cpuMs: sum(byNode),
        cpuPctByNode: byNode.map((ms) => (ms / windowMs) * 100),
        redis: countsBetween(counts0, counts1),
        publishes,
        windowMs,
      };
    },
  };
}

export interface MiniappFigures {
  opsPerSecond: number;
  framesPerSecond: number;
  usPerOp: number;
  cost: ClusterCost;
  applied: number;
  account: OpAccount;
  /** Latencies (ms) of ops sent in the window, per generator (open loop only). */
  latencies: number[][];
  generatorEldP99Ms: number;
  generatorCpuPct: number;
}

/** One load phase on every generator at once; the cluster's cost is read at the window's bounds. */
export async function runMiniappLoad(
  ctx: ClusterLoadContext,
  nodes: BenchNode[],
  placements: Placement[],
  mode: { cmd: 'saturate'; window: number } | { cmd: 'rate'; rate: number },
  warmMs: number,
  measureMs: number,
): Promise<MiniappFigures> {
  const startAt = Date.now() + 300;
  const rooms = sum(placements.map((p) => p.rooms.length));
  const costAt = at(startAt + warmMs, () => startCost(nodes, ctx.redis));
  const costDone = at(startAt + warmMs + measureMs, async () => (await costAt).finish());
  const timeout = warmMs + measureMs + ctx.o.drainMs + 30_000;
  const common = { startAt, warmMs, measureMs, drainMs: ctx.o.drainMs };
  const results = await Promise.all(
    ctx.workers.map((w, i) =>
      w.request<LoadResult>(
        mode.cmd === 'saturate'
          ? { cmd: 'saturate', ...common, window: mode.window }
          : { cmd: 'rate', ...common, rate: (mode.rate * placements[i].rooms.length) / rooms },
        timeout,
      ),
    ),
  );
  const cost = await costDone;
  const account = results.reduce((acc, r) => addAccount(acc, r.account), emptyAccount());
  addAccount(ctx.total, account);
  const applied = sum(results.map((r) => r.window.applied));
  return {
    opsPerSecond: sum(results.map((r) => (r.window.applied * 1000) / r.window.ms)),
    framesPerSecond: sum(results.map((r) => (r.window.frames * 1000) / r.window.ms)),
    usPerOp: applied ? (cost.cpuMs * 1000 * (measureMs / cost.windowMs)) / applied : Number.NaN,
    cost,
    applied,
    account,
    latencies: results.map((r) => r.latencies),
    generatorEldP99Ms: Math.max(...results.map((r) => r.window.eldP99Ms)),
    generatorCpuPct: (sum(results.map((r) => r.window.cpuMs)) / measureMs) * 100,
  };
}

export function describeCost(c: ClusterCost): string {
  return `processes ${c.cpuPctByNode.map((p) => `${fmt(p)}%`).join(' + ')} of a core`;
}

/**
 * One relay socket (`/v1/relay`) that acknowledges every `send` at once, on whichever process:
 * the sends of every conversation reach it, wherever the conversation runs.
 */
export class RelaySink {
  sends = 0;
  private readonly ws: WebSocket;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as { type: string; id?: string };
      if (f.type !== 'send') return;
      this.sends++;
      ws.send(JSON.stringify({ type: 'ack', id: f.id }));
    });
  }

  static open(node: BenchNode, token: string): Promise<RelaySink> {
    const ws = new WebSocket(`${node.url.replace(/^http/, 'ws')}/v1/relay`, ['archety.v1', `bearer.${token}`]);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new RelaySink(ws)));
      ws.once('error', reject);
    });
  }

  /** Waits until `expected` sends arrived (every accepted event answered), at most `timeoutMs`. */
  async drain(expected: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let last = Date.now();
    while (this.sends < expected) {
      if (Date.now() > deadline) return false;
      if (Date.now() - last > 5000) {
        last = Date.now();
        progress(`  ${fmt(this.sends)}/${fmt(expected)} replies delivered`);
      }
      await sleep(100);
    }
    return true;
  }

  close(): void {
    this.ws.close();
  }
}

export interface RelayFigures {
  eventsPerSecond: number;
  accepted: number;
  failed: number;
  usPerEvent: number;
  cost: ClusterCost;
  generatorEldP99Ms: number;
}

/**
 * Relay events posted closed-loop for `measureMs` after a warm-up, generator i posting to
 * process i mod N, from senders numbered from `senderBase` (fresh conversations per phase, so
 * each runs where its first event landed).
 */
export async function runRelayLoad(
  ctx: ClusterLoadContext,
  nodes: BenchNode[],
  workers: RelayWorker[],
  relayToken: string,
  senderBase: number,
): Promise<RelayFigures> {
  const { o } = ctx;
  const perWorker = Math.ceil(o.relayConversations / workers.length);
  let jobs = 0;
  const post = (durationMs: number) =>
    Promise.all(
      workers.map((w, i) =>
        w.run({
          url: nodes[i % nodes.length].url,
          token: relayToken,
          mode: 'closed',
          concurrency: o.relayConcurrency,
          rate: 0,
          durationMs,
          batch: 1,
          senderFrom: senderBase + i * perWorker,
          senders: perWorker,
          prefix: `n${nodes.length}j${jobs++}-${Date.now()}`,
        }),
      ),
    );
  const warm = await post(o.relayWarmMs);
  const cost = await startCost(nodes, ctx.redis);
  const results = await post(o.relayMeasureMs);
  const c = await cost.finish();
  const accepted = sum(results.map((r) => r.accepted));
  return {
    eventsPerSecond: (accepted * 1000) / c.windowMs,
    accepted: accepted + sum(warm.map((r) => r.accepted)),
    failed: sum([...warm, ...results].map((r) => r.failed)),
    usPerEvent: accepted ? (c.cpuMs * 1000) / accepted : Number.NaN,
    cost: c,
    generatorEldP99Ms: Math.max(...results.map((r) => r.loopDelayP99Ms)),
  };
}
