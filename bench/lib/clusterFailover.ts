/**
 * Failover under load: SDK clients (`src/client/MiniappClient.ts`, which reconnects, resumes
 * and resends unanswered edits) on sockets spread over the three processes edit one session,
 * each its own budget line, every few milliseconds; the session's owner (the process its lease
 * names) is SIGKILLed, started again, and so on, round after round.
 *
 * A round's failover time is from the kill to the first `applied` any client received for a
 * version the new owner committed. Which versions those are comes from PostgreSQL afterwards:
 * `miniapp_ops.at` is its transaction's start, after the kill for the new owner's commits and
 * before it for the dead one's (whose last frames may still arrive just after the kill).
 *
 * Afterwards, every acknowledged op (an `applied` a client got for its own edit) must be stored
 * at the version announced, and no version may have been announced with two different ops.
 */

import { MiniappClient } from '../../src/client/MiniappClient.ts';
import { Balancer, balancedSocketClass } from './balancedSocket.ts';
import { type BenchNode, nodeOf } from './clusterNodes.ts';
import type { ClusterBenchOptions } from './clusterOptions.ts';
import type { RedisProbe } from './clusterRedis.ts';
import { benchClient } from './database.ts';
import { progress, sleep } from './progress.ts';
import { fmt } from './stats.ts';

/** An `applied` frame as a client received it: `at` is Date.now(). */
interface Seen {
  version: number;
  opId: string;
  at: number;
}

interface EditingClient {
  client: MiniappClient;
  /** Op ids of this client's own edits. */
  mine: Set<string>;
  seen: Seen[];
}

/** A socket to the process the balancer picks, recording the `applied` frames it receives. */
function socketClass(balancer: Balancer<BenchNode>, home: number, seen: Seen[]) {
  return balancedSocketClass(balancer, home, () => ({
    received(text) {
      if (!text.startsWith('{"type":"applied"')) return;
      const f = JSON.parse(text) as { version: number; opId: string };
      seen.push({ version: f.version, opId: f.opId, at: Date.now() });
    },
  }));
}

export interface FailoverRound {
  killed: string;
  /** Kill → first `applied` of a version the new owner committed, ms (NaN: none came). */
  failoverMs: number;
  /** Kill → the lease naming a running process, ms, as polled every 20 ms (NaN: never within the wait). */
  leaseMovedMs: number;
}

export interface FailoverResult {
  rounds: FailoverRound[];
  sent: number;
  acknowledged: number;
  stored: number;
  /** Acknowledged ops not stored at the version announced. */
  lost: string[];
  /** Versions announced with two different ops. */
  twice: string[];
  /** Edits still unanswered when the clients stopped. */
  unanswered: number;
  conflicts: number;
  errors: Record<string, number>;
}

const lineId = (i: number) => `line-${i}`;

/** Starts the clients, inserts their budget lines, and starts their edits. */
async function startClients(
  o: ClusterBenchOptions,
  balancer: Balancer<BenchNode>,
  sessionId: string,
  tokens: string[],
): Promise<{ clients: EditingClient[]; stop(): void; result: Pick<FailoverResult, 'conflicts' | 'errors'> }> {
  const result = { conflicts: 0, errors: {} as Record<string, number> };
  const clients = tokens.map((token, i): EditingClient => {
    const seen: Seen[] = [];
    const client = new MiniappClient({
      baseUrl: 'http://cluster.invalid',
      sessionId,
      token,
      WebSocket: socketClass(balancer, i, seen),
      reconnect: { minDelayMs: 20, maxDelayMs: 200 },
    });
    client.on('conflict', () => result.conflicts++);
    client.on('error', (e) => {
      result.errors[e.code] = (result.errors[e.code] ?? 0) + 1;
    });
    return { client, mine: new Set(), seen };
  });
  const deadline = Date.now() + 20_000;
  while (clients.some((c) => c.client.version < 0)) {
    if (Date.now() > deadline) throw new Error('the failover clients did not all get a snapshot within 20 s');
    await sleep(20);
  }
  const first = clients[0];
  for (let i = 0; i < clients.length; i++) {
    const insert = {
      kind: 'insert' as const,
      path: ['budget', 'items'],
      value: { id: lineId(i), label: `line ${i}`, amount: 0 },
    };
    first.mine.add(first.client.apply(insert).opId);
  }
  await first.client.settled(10_000);
  let editing = true;
  const timers = clients.map((c, i) => {
    let amount = 0;
    return setInterval(() => {
      // No edits piled up while the client is away: it resends what it has when it is back.
      if (!editing || c.client.status !== 'open' || c.client.pending.length >= 20) return;
      const op = { kind: 'set' as const, path: ['budget', 'items', { id: lineId(i) }, 'amount'], value: ++amount };
      c.mine.add(c.client.apply(op).opId);
    }, o.failoverEditEveryMs);
  });
  return {
    clients,
    result,
    stop() {
      editing = false;
      for (const t of timers) clearInterval(t);
    },
  };
}

/** Polls until the session's lease names a running process other than `gone`; ms from `since`, NaN after `timeoutMs`. */
async function leaseMoved(
  redis: RedisProbe,
  nodes: BenchNode[],
  sessionId: string,
  gone: string,
  since: number,
  timeoutMs: number,
): Promise<number> {
  while (Date.now() - since < timeoutMs) {
    const holder = await redis.leaseHolder(`miniapp:${sessionId}`);
    if (holder !== gone && nodeOf(nodes, holder)) return Date.now() - since;
    await sleep(20);
  }
  return Number.NaN;
}

/** The running process holding the session's lease, waiting for one (after a restart, say). */
async function currentOwner(redis: RedisProbe, nodes: BenchNode[], sessionId: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const owner = nodeOf(nodes, await redis.leaseHolder(`miniapp:${sessionId}`));
    if (owner) return owner;
    if (Date.now() > deadline) throw new Error(`no running process holds session ${sessionId}'s lease`);
    await sleep(20);
  }
}

/** Runs `o.kills` rounds of SIGKILL of the owner, restart, and the accounting. */
export async function runFailover(
  o: ClusterBenchOptions,
  nodes: BenchNode[],
  redis: RedisProbe,
  dbUrl: string,
  sessionId: string,
  tokens: string[],
): Promise<FailoverResult> {
  const balancer = new Balancer(nodes, (node) => node.alive());
  const { clients, stop, result } = await startClients(o, balancer, sessionId, tokens);
  const kills: { killed: string; at: number; leaseMovedMs: number }[] = [];
  let unanswered = 0;
  try {
    await sleep(Math.max(500, o.leaseMs / 2));
    for (let k = 1; k <= o.kills; k++) {
      const owner = await currentOwner(redis, nodes, sessionId, 5 * o.leaseMs + 10_000);
      const at = Date.now();
      balancer.markDown(owner);
      await owner.kill();
      const moved = await leaseMoved(redis, nodes, sessionId, owner.processId, at, 5 * o.leaseMs + 10_000);
      kills.push({ killed: owner.name, at, leaseMovedMs: moved });
      await owner.start();
      balancer.markUp(owner);
      progress(
        `  kill ${k}/${o.kills}: ${owner.name}; lease moved after ${fmt(moved)} ms; restarted (${owner.name} is now ${owner.processId})`,
      );
      // Some service by the new owner before the next kill, as under any steady load.
      await sleep(Math.max(300, o.leaseMs / 2));
    }
  } finally {
    stop();
    const answered = await Promise.all(
      clients.map((c) =>
        c.client.settled(15_000).then(
          () => 0,
          () => c.client.pending.length,
        ),
      ),
    );
    unanswered = answered.reduce((a, b) => a + b, 0);
    for (const c of clients) c.client.close();
  }
  return { ...(await account(dbUrl, sessionId, clients, kills)), ...result, unanswered };
}

/** Failover times per kill and the op accounting, against what PostgreSQL stored. */
async function account(
  dbUrl: string,
  sessionId: string,
  clients: EditingClient[],
  kills: { killed: string; at: number; leaseMovedMs: number }[],
): Promise<Omit<FailoverResult, 'unanswered' | 'conflicts' | 'errors'>> {
  const db = benchClient(dbUrl);
  await db.connect();
  let rows: { version: string; op_id: string; at_ms: string }[];
  try {
    ({ rows } = await db.query(
      'SELECT version, op_id, extract(epoch FROM at) * 1000 AS at_ms FROM miniapp_ops WHERE session_id = $1 ORDER BY version',
      [sessionId],
    ));
  } finally {
    await db.end();
  }
  const stored = new Map(rows.map((r) => [Number(r.version), { opId: r.op_id, at: Number(r.at_ms) }]));
  const seen = clients.flatMap((c) => c.seen);
  const rounds = kills.map(({ killed, at, leaseMovedMs }): FailoverRound => {
    const firstNew = rows.find((r) => Number(r.at_ms) >= at);
    const from = firstNew ? Number(firstNew.version) : Number.POSITIVE_INFINITY;
    let arrival = Number.POSITIVE_INFINITY;
    for (const s of seen) if (s.version >= from && s.at >= at && s.at < arrival) arrival = s.at;
    return { killed, failoverMs: Number.isFinite(arrival) ? arrival - at : Number.NaN, leaseMovedMs };
  });
  const announced = new Map<number, string>();
  const twice = new Set<string>();
  for (const s of seen) {
    const before = announced.get(s.version);
    if (before !== undefined && before !== s.opId) twice.add(`v${s.version}: ${before} / ${s.opId}`);
    announced.set(s.version, s.opId);
  }
  const acknowledged = new Map<string, number>();
  for (const c of clients) for (const s of c.seen) if (c.mine.has(s.opId)) acknowledged.set(s.opId, s.version);
  const lost = [...acknowledged]
    .filter(([opId, version]) => stored.get(version)?.opId !== opId)
    .map(
      ([opId, version]) => `${opId} announced at v${version}, stored there: ${stored.get(version)?.opId ?? 'nothing'}`,
    );
  return {
    rounds,
    sent: clients.reduce((n, c) => n + c.mine.size, 0),
    acknowledged: acknowledged.size,
    stored: rows.length,
    lost,
    twice: [...twice],
  };
}
