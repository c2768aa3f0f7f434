/**
 * A steady load of edits on one miniapp session of a test cluster, for the fault tests: SDK
 * clients (`MiniappClient`, which reconnects and resumes) on sockets spread over the
 * processes, each setting the amount of its own budget line every 20–50 ms. Each client
 * reaches the cluster through a `Balancer`, as behind a load balancer: it connects to its home
 * node while that is up, else to the next one up, so a client whose node died resumes on
 * another with its pending edits.
 *
 * Every frame each socket received is recorded (the SDK does not report history frames or
 * which node it was on), so a test can check afterwards, against the store
 * (`expectAccounting`): every acknowledged op is stored once at the version announced, no
 * version was announced with two ops, and the state is the replay of the stored ops.
 */
import { expect } from 'vitest';
import { miniapps } from '../../actors/apps/index.ts';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { applyOp, type Op } from '../../actors/ops.ts';
import { Balancer as BalancerOf, balancedSocketClass } from '../../bench/lib/balancedSocket.ts';
import { type ConflictEvent, MiniappClient } from '../../src/client/MiniappClient.ts';
import type { ClusterNode, TestCluster } from './cluster.ts';
import { api } from './http.ts';
import type { Opened } from './socket.ts';

/** Where each client connects: its home node while it is not marked down, else the next one. */
export class Balancer extends BalancerOf<ClusterNode> {}

/** One socket a client opened: where, and how it ended. */
export interface Connection {
  node: string;
  openedAt: number;
  closed?: { code: number; reason: string; at: number };
}

/** A frame a client received, with when (`performance.now()`), on which node and which of its connections. */
export type Received = { frame: ServerFrame; at: number; node: string; conn: number };

/** An op a client sent: on which of its connections, when, and from which base. */
export type Sent = { opId: string; baseVersion: number; at: number; conn: number };

export interface LoadClient {
  readonly index: number;
  readonly user: string;
  readonly home: ClusterNode;
  readonly client: MiniappClient;
  readonly connections: Connection[];
  readonly received: Received[];
  /** Every op frame it sent (an edit is sent again after a reconnect). */
  readonly outgoing: Sent[];
  /** The op ids of every edit this client made. */
  readonly sent: Set<string>;
  readonly conflicts: ConflictEvent[];
}

/** A socket to the node the balancer picks (whatever URL the SDK asks for), recording what it sends and receives. */
function routedSocketClass(balancer: Balancer, home: number, record: Omit<LoadClient, 'client'>) {
  return balancedSocketClass(balancer, home, () => {
    let connection: Connection;
    let conn = -1;
    return {
      opened(node) {
        connection = { node: node.nodeId, openedAt: performance.now() };
        conn = record.connections.push(connection) - 1;
      },
      received(text, node) {
        record.received.push({ frame: JSON.parse(text), at: performance.now(), node: node.nodeId, conn });
      },
      sending(data) {
        const frame = JSON.parse(data);
        if (frame.type === 'op')
          record.outgoing.push({ opId: frame.opId, baseVersion: frame.baseVersion, at: performance.now(), conn });
      },
      closed(code, reason) {
        connection.closed = { code, reason, at: performance.now() };
      },
    };
  });
}

/** The budget line client `index` edits (inserted by the test before the load starts). */
export const lineId = (index: number) => `line-${index}`;

/** Adds the budget lines of `count` load clients to the session through `socket` (one at a time, each applied). */
export async function addBudgetLines(socket: Opened, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const opId = `add-${i}`;
    socket.send({
      type: 'op',
      opId,
      baseVersion: i,
      op: { kind: 'insert', path: ['budget', 'items'], value: { id: lineId(i), label: `line ${i}`, amount: 0 } },
    });
    expect((await socket.answer(opId, 10_000)).type).toBe('applied');
  }
}

export interface LoadOptions {
  cluster: TestCluster;
  balancer: Balancer;
  sessionId: string;
  /** One per client: its user, its token, and the index of its home node. */
  clients: { user: string; token: string; home: number }[];
}

export interface Load {
  clients: LoadClient[];
  /** Resolves once every client holds a snapshot (within 15 s). */
  connected(): Promise<void>;
  /** Stops making edits, and resolves once every client's edits were answered (within `timeoutMs`). */
  stop(timeoutMs?: number): Promise<void>;
  close(): void;
}

/** Starts the clients and their edits; `stop` ends the edits, `close` the sockets. */
export function startLoad(options: LoadOptions): Load {
  const { balancer, sessionId } = options;
  let editing = true;
  const timers = new Set<NodeJS.Timeout>();
  const clients = options.clients.map(({ user, token, home }, index): LoadClient => {
    const record: Omit<LoadClient, 'client'> = {
      index,
      user,
      home: options.cluster.nodes[home],
      connections: [],
      received: [],
      outgoing: [],
      sent: new Set<string>(),
      conflicts: [],
    };
    const client = new MiniappClient({
      baseUrl: 'http://cluster.invalid',
      sessionId,
      token,
      WebSocket: routedSocketClass(balancer, home, record),
      reconnect: { minDelayMs: 50, maxDelayMs: 500 },
    });
    client.on('conflict', (c) => record.conflicts.push(c));
    return { ...record, client };
  });

  const edit = (c: LoadClient, amount: number): void => {
    if (!editing) return;
    if (c.client.version >= 0) {
      const op: Op = { kind: 'set', path: ['budget', 'items', { id: lineId(c.index) }, 'amount'], value: amount };
      c.sent.add(c.client.apply(op).opId);
    }
    const timer = setTimeout(
      () => {
        timers.delete(timer);
        edit(c, amount + 1);
      },
      20 + Math.random() * 30,
    );
    timers.add(timer);
  };
  for (const c of clients) edit(c, 1);

  return {
    clients,
    async connected() {
      await Promise.all(
        clients.map((c) => expect.poll(() => c.client.version, { timeout: 15_000 }).toBeGreaterThanOrEqual(0)),
      );
    },
    async stop(timeoutMs = 20_000) {
      editing = false;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const unsettled = await Promise.all(
        clients.map((c) =>
          c.client.settled(timeoutMs).then(
            () => null,
            () =>
              `${c.user} (socket on ${c.connections.at(-1)?.node}, ${c.client.status}): ${c.client.pending.length} edits unanswered`,
          ),
        ),
      );
      expect(unsettled.filter(Boolean), 'every edit is answered once the load stops').toEqual([]);
    },
    close() {
      editing = false;
      for (const timer of timers) clearTimeout(timer);
      for (const c of clients) c.client.close();
    },
  };
}

type AppliedFrame = Extract<ServerFrame, { type: 'applied' }>;

const appliedOf = (c: LoadClient) =>
  c.received.filter((r): r is Received & { frame: AppliedFrame } => r.frame.type === 'applied');

/** How many of `c`'s own edits were acknowledged (an `applied` for it arrived) since `since`. */
export function acknowledgedSince(c: LoadClient, since: number): number {
  return new Set(
    appliedOf(c)
      .filter((r) => r.at >= since && c.sent.has(r.frame.opId))
      .map((r) => r.frame.opId),
  ).size;
}

/** Resolves once every client got `count` of its own edits acknowledged since `since` (`performance.now()`). */
export async function expectProgress(load: Load, since: number, count: number, timeoutMs = 15_000): Promise<void> {
  await Promise.all(
    load.clients.map((c) =>
      expect
        .poll(() => acknowledgedSince(c, since), {
          timeout: timeoutMs,
          message: `${c.user} (home ${c.home.nodeId}, now on ${c.connections.at(-1)?.node}, ${c.client.status}, ${c.client.pending.length} pending) is served`,
        })
        .toBeGreaterThanOrEqual(count),
    ),
  );
}

/**
 * The longest time (ms) between two consecutive new versions announced to any client, among the
 * versions announced after `from` (`performance.now()`): how long the session went unserved.
 */
export function longestServiceGap(load: Load, from: number): { ms: number; after: number; before: number } {
  const firstSeen = new Map<number, number>();
  for (const c of load.clients)
    for (const r of appliedOf(c)) {
      const seen = firstSeen.get(r.frame.version);
      if (seen === undefined || r.at < seen) firstSeen.set(r.frame.version, r.at);
    }
  const times = [...firstSeen.entries()].sort(([a], [b]) => a - b);
  let gap = { ms: 0, after: 0, before: 0 };
  let previous = from;
  let previousVersion = 0;
  for (const [version, at] of times) {
    if (at < from) {
      previousVersion = version;
      continue;
    }
    if (at - previous > gap.ms) gap = { ms: Math.round(at - previous), after: previousVersion, before: version };
    previous = Math.max(previous, at);
    previousVersion = version;
  }
  return gap;
}

/** What the accounting found, for the test's report. */
export interface Accounting {
  stored: number;
  acknowledged: number;
  sent: number;
  conflicts: number;
  errors: Record<string, number>;
}

/**
 * After the load stopped: every acknowledged op (an `applied` a client got for its own edit) is
 * stored exactly once, at the version announced; every version any client was told of names
 * the op stored there (so none was announced twice with different ops); the stored versions
 * run 1…N without a gap, and the session's state (read through `readFrom`) is their replay.
 */
export async function expectAccounting(
  load: Load,
  cluster: TestCluster,
  sessionId: string,
  readFrom: ClusterNode,
  token: string,
): Promise<Accounting> {
  const { rows } = await cluster.db.pool.query<{ version: string; op_id: string; op: Op }>(
    'SELECT version, op_id, op FROM miniapp_ops WHERE session_id = $1 ORDER BY version',
    [sessionId],
  );
  const stored = new Map(rows.map((r) => [Number(r.version), r.op_id]));
  expect(
    rows.map((r) => Number(r.version)),
    'stored versions run 1…N',
  ).toEqual(rows.map((_, i) => i + 1));
  const storedOpIds = rows.map((r) => r.op_id);
  expect(storedOpIds.length - new Set(storedOpIds).size, 'ops stored more than once').toBe(0);

  const announced = new Map<number, Set<string>>();
  for (const c of load.clients)
    for (const { frame } of appliedOf(c)) {
      const ids = announced.get(frame.version) ?? new Set();
      ids.add(frame.opId);
      announced.set(frame.version, ids);
    }
  const twice = [...announced].filter(([, ids]) => ids.size > 1).map(([v, ids]) => `${v}: ${[...ids].join(' / ')}`);
  expect(twice, 'versions announced with two different ops').toEqual([]);
  const unlike = [...announced]
    .filter(([v, ids]) => stored.get(v) !== [...ids][0])
    .map(([v, ids]) => `v${v}: announced ${[...ids][0]}, stored ${stored.get(v) ?? 'nothing'}`);
  expect(unlike, 'announced versions that the store does not hold as announced').toEqual([]);

  const acknowledged = new Set<string>();
  for (const c of load.clients)
    for (const { frame } of appliedOf(c)) if (c.sent.has(frame.opId)) acknowledged.add(frame.opId);

  const app = miniapps.get('trip-planner');
  if (!app) throw new Error('the trip-planner app is not registered');
  let state = app.initialState({ title: 'Lisbon' });
  for (const r of rows) {
    const next = applyOp(app.schema, state, r.op);
    if (!next.ok) throw new Error(`stored op ${r.version} (${r.op_id}) does not apply: ${next.message}`);
    state = next.state;
  }
  const view = await api(readFrom.url, 'GET', `/v1/miniapps/${sessionId}`, { token });
  expect(view.status).toBe(200);
  expect(view.body.version).toBe(rows.length);
  expect(view.body.state).toEqual(state);

  const errors: Record<string, number> = {};
  for (const c of load.clients)
    for (const { frame } of c.received) if (frame.type === 'error') errors[frame.code] = (errors[frame.code] ?? 0) + 1;
  return {
    stored: rows.length,
    acknowledged: acknowledged.size,
    sent: load.clients.reduce((n, c) => n + c.sent.size, 0),
    conflicts: load.clients.reduce((n, c) => n + c.conflicts.length, 0),
    errors,
  };
}
