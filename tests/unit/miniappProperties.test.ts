/**
 * Properties of the miniapp session under random concurrency: several simulated clients,
 * each on its own socket and lagging behind by a random amount, send random trip-planner ops;
 * submissions (alone, or several in one batch as the socket layer sends them when they arrive in
 * one turn of the event loop), commits, deliveries, resends and reconnects interleave at random. The server is
 * driven either through the pure rules of miniappSession.ts or through the XState machine
 * (with its effects recorded, no database).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createActor, fromPromise } from 'xstate';
import { tripPlannerSchema } from '../../actors/apps/tripPlanner.ts';
import { Conns } from '../../actors/Conns.ts';
import { type CheckpointInput, miniappMachine } from '../../actors/miniapp.machine.ts';
import type { AppliedOp, ServerFrame } from '../../actors/miniappFrames.ts';
import {
  type Decision,
  decideCommitted,
  decideJoin,
  decideLeave,
  decideOps,
  decideResume,
  historyNeededAfter,
  LOG_WINDOW,
  type MiniappContext,
  needsHistory,
  type OpRequest,
} from '../../actors/miniappSession.ts';
import { type LoggedOp, OpLog } from '../../actors/OpLog.ts';
import { applyOp, claimedPath, type Op, overlaps, type Path } from '../../actors/ops.ts';
import { validate } from '../../actors/schema.ts';
import { deepFreeze, Rng, randomOp, type Trip, tripStateArb } from './tripPlannerArbitraries.ts';

// ---------------------------------------------------------------------------------------------
// The server under test, behind one small interface

/** Where the server's effects go: the simulated transport and store. */
interface Sink {
  send(conn: string, frame: ServerFrame): void;
  publish(frame: ServerFrame): void;
  attach(conn: string): void;
  detach(conn: string): void;
  persistOp(entry: LoggedOp): void;
  /** Stored ops with after < version < before (the store's `opsBetween`). */
  opsBetween(after: number, before: number): LoggedOp[];
}

interface Server {
  join(conn: string, user: string): void;
  leave(conn: string): void;
  /** Ops that arrived together, in order (one `ops` message). */
  ops(requests: OpRequest[]): void;
  resume(conn: string, since: number): void;
  committed(version: number): void;
  context(): MiniappContext;
}

type Driver = (initial: Trip, sink: Sink) => Server;

function initialContext(initial: Trip): MiniappContext {
  return {
    sessionId: 's',
    app: 'trip-planner',
    state: initial,
    version: 0,
    committedState: initial,
    committedVersion: 0,
    checkpointVersion: 0,
    participants: ['u0', 'u1', 'u2'],
    log: new OpLog([], LOG_WINDOW),
    conns: new Conns(),
    held: [],
    deferred: null,
  };
}

/** The pure rules, sequenced the way the machine sequences them. */
const pureDriver: Driver = (initial, sink) => {
  let ctx = initialContext(initial);
  const run = (d: Decision) => {
    ctx = { ...ctx, ...d.context };
    for (const e of d.effects) {
      if (e.type === 'send') sink.send(e.params.conn, e.params.frame);
      else if (e.type === 'publish') sink.publish(e.params.frame);
      else if (e.type === 'attach') sink.attach(e.params.conn);
      else if (e.type === 'detach') sink.detach(e.params.conn);
      else if (e.type === 'persistOp') sink.persistOp(e.params.entry);
    }
  };
  const history = (from: number) => sink.opsBetween(from, ctx.log.firstVersion(ctx.version + 1));
  return {
    join(conn, user) {
      run(decideJoin(ctx, conn, user));
    },
    leave(conn) {
      run(decideLeave(ctx, conn));
    },
    ops(requests) {
      const req = { type: 'ops' as const, requests };
      const after = historyNeededAfter(ctx, req);
      run(decideOps(ctx, req, after === null ? [] : history(after)));
    },
    resume(conn, since) {
      const req = { type: 'resume' as const, conn, since };
      run(decideResume(ctx, req, needsHistory(ctx, req) ? history(since) : []));
    },
    committed(version) {
      run(decideCommitted(ctx, version));
    },
    context: () => ctx,
  };
};

/** The XState machine with every effect recorded. History loads are asynchronous, so the simulation stays within the log window. */
const machineDriver: Driver = (initial, sink) => {
  const machine = miniappMachine.provide({
    actions: {
      send: (_, { conn, frame }) => sink.send(conn, frame),
      publish: (_, { frame }) => sink.publish(frame),
      attach: (_, { conn }) => sink.attach(conn),
      detach: (_, { conn }) => sink.detach(conn),
      persistOp: (_, { entry }) => sink.persistOp(entry),
      persistCheckpoint: () => {},
      persistParticipant: (_, { reply }) => reply(),
    },
    actors: {
      loadOps: fromPromise<LoggedOp[], { sessionId: string; after: number; before: number }>(async ({ input }) =>
        sink.opsBetween(input.after, input.before),
      ),
      saveCheckpoint: fromPromise<void, CheckpointInput>(async () => {}),
    },
  });
  const actor = createActor(machine, {
    input: {
      sessionId: 's',
      app: 'trip-planner',
      state: initial,
      version: 0,
      checkpointVersion: 0,
      participants: ['u0', 'u1', 'u2'],
      log: [],
    },
  }).start();
  const send = (event: Parameters<typeof actor.send>[0]) => {
    actor.send(event);
    const snap = actor.getSnapshot();
    if (snap.hasTag('busy') || snap.status !== 'active') throw new Error(`the actor is ${String(snap.value)}`);
  };
  return {
    join: (conn, user) => send({ type: 'join', conn, user }),
    leave: (conn) => send({ type: 'leave', conn }),
    ops: (requests) => send({ type: 'ops', requests }),
    resume: (conn, since) => send({ type: 'resume', conn, since }),
    committed: (version) => send({ type: 'committed', version }),
    context: () => actor.getSnapshot().context,
  };
};

// ---------------------------------------------------------------------------------------------
// Simulated clients and store

type Command =
  | { t: 'submit'; client: number; seed: number; lag: number }
  | { t: 'burst'; ops: { client: number; seed: number; lag: number }[] }
  | { t: 'commit'; count: number; each: boolean }
  | { t: 'deliver'; client: number; count: number }
  | { t: 'resend'; client: number; pick: number; sameBase: boolean }
  | { t: 'reconnect'; client: number; resume: boolean };

const CLIENTS = [
  { name: 'a', user: 'u0' },
  { name: 'b', user: 'u0' }, // the same user as `a`, on another socket
  { name: 'c', user: 'u1' },
  { name: 'd', user: 'u2' },
];

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({ t: fc.constant('submit' as const), client: fc.nat(3), seed: fc.integer(), lag: fc.nat(3) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('burst' as const),
      ops: fc.array(fc.record({ client: fc.nat(3), seed: fc.integer(), lag: fc.nat(3) }), {
        minLength: 2,
        maxLength: 5,
      }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('commit' as const),
      count: fc.integer({ min: 1, max: 4 }),
      each: fc.boolean(),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('deliver' as const),
      client: fc.nat(3),
      count: fc.integer({ min: 1, max: 6 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('resend' as const),
      client: fc.nat(3),
      pick: fc.nat(),
      sameBase: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant('reconnect' as const), client: fc.nat(3), resume: fc.boolean() }),
  },
);

type Via = 'send' | 'publish';
type Answer =
  | { kind: 'applied'; version: number }
  | { kind: 'conflict'; frame: Extract<ServerFrame, { type: 'conflict' }> }
  | { kind: 'error'; code: string };

interface Submission {
  opId: string;
  op: Op;
  baseVersion: number;
  conn: string;
  /** The version it was applied as, when this submission was the one applied. */
  appliedAs?: number;
}

interface Client {
  name: string;
  user: string;
  conn: string;
  connSeq: number;
  inbox: { frame: ServerFrame; via: Via; resume: boolean }[];
  /** Replayed from the snapshot and the `applied` frames, in version order. */
  state: unknown;
  version: number;
  submissions: Submission[];
  answers: Map<string, Answer[]>;
  nextOp: number;
}

interface World {
  server: Server;
  clients: Client[];
  /** Every persistOp, in call order (the durable log once committed). */
  store: LoggedOp[];
  durable: number;
  attached: Set<string>;
  initial: Trip;
  fresh: () => string;
  /** Set while the server answers a resume, so its `applied` frames are not mistaken for op answers. */
  resuming: boolean;
}

function createWorld(driver: Driver, initial: Trip): World {
  let ids = 0;
  const world: World = {
    server: null as unknown as Server,
    clients: CLIENTS.map((c) => ({
      ...c,
      conn: `${c.name}#0`,
      connSeq: 0,
      inbox: [],
      state: null,
      version: -1,
      submissions: [],
      answers: new Map(),
      nextOp: 0,
    })),
    store: [],
    durable: 0,
    attached: new Set(),
    initial,
    fresh: () => `n${++ids}`,
    resuming: false,
  };
  const clientOf = (conn: string) => world.clients.find((c) => c.conn === conn);
  world.server = driver(initial, {
    send(conn, frame) {
      if (!world.attached.has(conn)) throw new Error(`send to a socket that is not attached: ${conn}`);
      clientOf(conn)?.inbox.push({ frame, via: 'send', resume: world.resuming });
    },
    publish(frame) {
      for (const conn of world.attached) clientOf(conn)?.inbox.push({ frame, via: 'publish', resume: false });
    },
    attach: (conn) => world.attached.add(conn),
    detach: (conn) => world.attached.delete(conn),
    persistOp(entry) {
      if (entry.version !== world.store.length + 1) throw new Error(`persistOp out of order: ${entry.version}`);
      world.store.push(entry);
    },
    opsBetween: (after, before) =>
      world.store.slice(0, world.durable).filter((e) => e.version > after && e.version < before),
  });
  for (const c of world.clients) world.server.join(c.conn, c.user);
  return world;
}

function answer(client: Client, opId: string, a: Answer): void {
  const list = client.answers.get(opId) ?? [];
  list.push(a);
  client.answers.set(opId, list);
}

/** The client takes one frame: snapshots and `applied` frames build its replayed state. */
function receive(world: World, client: Client, { frame, via, resume }: Client['inbox'][number]): void {
  const mine = (opId: string) => client.submissions.some((s) => s.opId === opId);
  switch (frame.type) {
    case 'snapshot':
      expect(frame.version).toBeGreaterThanOrEqual(client.version);
      client.state = frame.state;
      client.version = frame.version;
      return;
    case 'applied': {
      const stored = world.store[frame.version - 1];
      expect(frame.version).toBeLessThanOrEqual(world.durable);
      expect({ opId: frame.opId, by: frame.by, op: frame.op }).toEqual({
        opId: stored.opId,
        by: stored.by,
        op: stored.op,
      });
      if (frame.version === client.version + 1) {
        const r = applyOp(tripPlannerSchema, client.state, frame.op);
        if (!r.ok) throw new Error(`client ${client.name} cannot replay v${frame.version}: ${r.message}`);
        client.state = r.state;
        client.version = frame.version;
      } else {
        // Only history already seen comes again (a resume, or the answer to a resend).
        expect(frame.version, `gap before applied v${frame.version} at ${client.name}`).toBeLessThanOrEqual(
          client.version,
        );
        expect(via).toBe('send');
      }
      // Answers to this client's ops: the publish of an op it sent on this socket, or the
      // reply to a resend. A resume's replies are history, not answers.
      if (!resume && frame.by === client.user && mine(frame.opId) && (via === 'send' || stored.conn === client.conn)) {
        answer(client, frame.opId, { kind: 'applied', version: frame.version });
      }
      return;
    }
    case 'conflict':
      expect(mine(frame.opId)).toBe(true);
      answer(client, frame.opId, { kind: 'conflict', frame });
      return;
    case 'error':
      expect(frame.ref && mine(frame.ref)).toBeTruthy();
      answer(client, frame.ref as string, { kind: 'error', code: frame.code });
      return;
    case 'presence':
      expect(frame.online).toContain(client.user);
      return;
  }
}

const submitted = (c: Client, opId: string) => c.submissions.filter((s) => s.opId === opId).length;
const answered = (c: Client, opId: string) => c.answers.get(opId)?.length ?? 0;
const isAnswered = (c: Client, opId: string) => answered(c, opId) >= submitted(c, opId);
const unanswered = (c: Client) => [...new Set(c.submissions.map((s) => s.opId))].filter((id) => !isAnswered(c, id));

function deliver(world: World, client: Client, count = Number.POSITIVE_INFINITY): void {
  for (let i = 0; i < count && client.inbox.length; i++) receive(world, client, client.inbox.shift()!);
}

function commit(world: World, count: number, each: boolean): void {
  const target = Math.min(world.store.length, world.durable + count);
  if (target === world.durable) return;
  if (each) {
    for (let v = world.durable + 1; v <= target; v++) {
      world.durable = v;
      world.server.committed(v);
    }
  } else {
    world.durable = target;
    world.server.committed(target);
    // A late acknowledgement of an older version changes nothing.
    world.server.committed(target - 1);
  }
}

/** Sends ops that arrive together (one batch), noting which submission each stored op came from. */
function submitAll(world: World, ops: { client: Client; op: Op; baseVersion: number; opId: string }[]): void {
  const subs = ops.map(({ client, op, baseVersion, opId }) => {
    const sub: Submission = { opId, op, baseVersion, conn: client.conn };
    client.submissions.push(sub);
    return sub;
  });
  const before = world.store.length;
  world.server.ops(
    ops.map(({ client, op, baseVersion, opId }) => ({
      type: 'op',
      conn: client.conn,
      by: client.user,
      opId,
      baseVersion,
      op,
      receivedAt: 0,
    })),
  );
  for (const e of world.store.slice(before)) {
    const sub = subs.find((s) => s.appliedAs === undefined && s.conn === e.conn && s.opId === e.opId);
    if (sub) sub.appliedAs = e.version;
  }
}

function submit(world: World, client: Client, op: Op, baseVersion: number, opId: string): void {
  submitAll(world, [{ client, op, baseVersion, opId }]);
}

function step(world: World, cmd: Command): void {
  const client = world.clients[cmd.t === 'commit' || cmd.t === 'burst' ? 0 : cmd.client];
  switch (cmd.t) {
    case 'submit': {
      const op = randomOp(client.state as Trip, new Rng(cmd.seed), world.fresh);
      submit(world, client, op, Math.max(0, client.version - cmd.lag), `${client.name}-${++client.nextOp}`);
      return;
    }
    case 'burst':
      submitAll(
        world,
        cmd.ops.map(({ client: k, seed, lag }) => {
          const c = world.clients[k];
          return {
            client: c,
            op: randomOp(c.state as Trip, new Rng(seed), world.fresh),
            baseVersion: Math.max(0, c.version - lag),
            opId: `${c.name}-${++c.nextOp}`,
          };
        }),
      );
      return;
    case 'commit':
      commit(world, cmd.count, cmd.each);
      return;
    case 'deliver':
      deliver(world, client, cmd.count);
      return;
    case 'resend': {
      // A client resends an op it already has an answer for (e.g. unsure after a reconnect).
      // Resends are recognised while the op is among the last LOG_WINDOW ops (README), so
      // only those are resent; older ones would be new ops to the server.
      const oldest = world.server.context().log.firstVersion(Number.POSITIVE_INFINITY);
      const forgotten = (opId: string) =>
        world.store.some((e) => e.by === client.user && e.opId === opId && e.version < oldest);
      const done = client.submissions.filter((s) => isAnswered(client, s.opId) && !forgotten(s.opId));
      if (!done.length) return;
      const s = done[cmd.pick % done.length];
      submit(world, client, s.op, cmd.sameBase ? s.baseVersion : client.version, s.opId);
      return;
    }
    case 'reconnect': {
      // Only a client with nothing outstanding: answers to a closed socket are lost by design.
      deliver(world, client);
      if (unanswered(client).length) return;
      const since = client.version;
      world.server.leave(client.conn);
      client.conn = `${client.name}#${++client.connSeq}`;
      world.server.join(client.conn, client.user);
      if (cmd.resume) {
        world.resuming = true;
        world.server.resume(client.conn, since);
        world.resuming = false;
      }
      return;
    }
  }
}

/** Commits everything and delivers every frame. */
function settle(world: World): void {
  commit(world, Number.POSITIVE_INFINITY, false);
  for (const c of world.clients) deliver(world, c);
}

function replay(initial: unknown, ops: Op[]): unknown {
  let state = initial;
  for (const op of ops) {
    const r = applyOp(tripPlannerSchema, state, op);
    if (!r.ok) throw new Error(`stored op does not replay: ${r.message}`);
    state = r.state;
  }
  return state;
}

/** `prefill`: that many committed title edits by client c first, so later bases can reach back past the in-memory log. */
function runScenario(driver: Driver, initial: Trip, commands: Command[], prefill = 0): World {
  const world = createWorld(driver, initial);
  const c = world.clients[2];
  for (let i = 0; i < prefill; i++)
    submit(world, c, { kind: 'set', path: ['title'], value: `p${i}` }, i, `${c.name}-${++c.nextOp}`);
  commit(world, prefill, false);
  for (const c of world.clients) deliver(world, c);
  for (const cmd of commands) step(world, cmd);
  settle(world);
  return world;
}

/** Checks the invariants the session promises its clients. */
function checkNoOpLost(world: World): void {
  const ctx = world.server.context();
  const n = world.store.length;

  // Versions are gap-free 1..n, all committed, and every (user, opId) is stored at most once.
  expect(world.store.map((e) => e.version)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  expect([ctx.version, ctx.committedVersion, world.durable]).toEqual([n, n, n]);
  const keys = world.store.map((e) => `${e.by}/${e.opId}`);
  expect(new Set(keys).size).toBe(n);

  // The server's state is the initial state with the stored ops replayed in version order.
  const replayed = replay(
    world.initial,
    world.store.map((e) => e.op),
  );
  expect(ctx.committedState).toEqual(replayed);
  expect(ctx.state).toEqual(replayed);

  for (const client of world.clients) {
    for (const opId of new Set(client.submissions.map((s) => s.opId))) {
      const answers = client.answers.get(opId) ?? [];
      // Every submission got exactly one answer.
      expect(answers.length, `answers to ${opId}`).toBe(submitted(client, opId));
      const stored = world.store.filter((e) => e.by === client.user && e.opId === opId);
      const applied = answers.filter((a): a is Extract<Answer, { kind: 'applied' }> => a.kind === 'applied');
      if (applied.length) {
        // An op answered `applied` is in the log exactly once, at the version it was told.
        expect(stored).toHaveLength(1);
        for (const a of applied) expect(a.version).toBe(stored[0].version);
      } else {
        expect(stored).toHaveLength(0);
      }
      for (const a of answers) {
        if (a.kind === 'error') expect([`invalid_op`, `base_too_old`, `invalid_base_version`]).toContain(a.code);
      }
    }
  }

  // No edit silently lost: an op applied over a stale base clashes with nothing applied since
  // that base from another socket.
  for (const e of world.store) {
    const sub = world.clients.flatMap((c) => c.submissions).find((s) => s.appliedAs === e.version);
    expect(sub).toMatchObject({ opId: e.opId, conn: e.conn });
    const claimed = claimedPath(tripPlannerSchema, e.op);
    for (const other of world.store) {
      if (other.version <= (sub as Submission).baseVersion || other.version >= e.version || other.conn === e.conn)
        continue;
      expect(overlaps(other.touched, claimed), `v${e.version} over v${other.version}`).toBe(false);
    }
  }

  // A conflict names exactly the ops after its base, one of which (from another socket) overlaps.
  for (const client of world.clients) {
    for (const [opId, answers] of client.answers) {
      for (const a of answers) {
        if (a.kind !== 'conflict') continue;
        const subs = client.submissions.filter((s) => s.opId === opId);
        const fits = subs.some((s) => {
          const since = world.store.filter((e) => e.version > s.baseVersion && e.version <= a.frame.version);
          const names: AppliedOp[] = since.map(({ opId: o, by, version, op }) => ({ opId: o, by, version, op }));
          const claimed = claimedPath(tripPlannerSchema, s.op);
          return (
            JSON.stringify(a.frame.ops) === JSON.stringify(names) &&
            since.some((e) => e.conn !== s.conn && overlaps(e.touched, claimed))
          );
        });
        expect(fits, `conflict answer to ${opId}`).toBe(true);
      }
    }
  }
}

function checkClientsConverge(world: World): void {
  const ctx = world.server.context();
  for (const client of world.clients) {
    expect(client.version, `client ${client.name}`).toBe(ctx.committedVersion);
    expect(client.state, `client ${client.name}`).toEqual(ctx.committedState);
  }
}

const scenarioArb = fc.record({
  initial: tripStateArb,
  commands: fc.array(commandArb, { minLength: 10, maxLength: 90, size: 'max' }),
});

// ---------------------------------------------------------------------------------------------

describe('miniapp session properties', () => {
  for (const [name, driver] of [
    ['the pure session rules', pureDriver],
    ['the machine', machineDriver],
  ] as const) {
    describe(name, () => {
      it('random concurrent op sequences never lose an applied op', () => {
        fc.assert(
          fc.property(scenarioArb, ({ initial, commands }) => {
            checkNoOpLost(runScenario(driver, initial, commands));
          }),
          { numRuns: 80 },
        );
      });

      it("every client's replayed state equals the server's", () => {
        fc.assert(
          fc.property(scenarioArb, ({ initial, commands }) => {
            checkClientsConverge(runScenario(driver, initial, commands));
          }),
          { numRuns: 80 },
        );
      });
    });
  }

  it('never loses an op and converges when bases reach back past the in-memory log (history from the store)', () => {
    const prefill = LOG_WINDOW + 44;
    fc.assert(
      fc.property(scenarioArb, ({ initial, commands }) => {
        const stale = commands.map((c) => (c.t === 'submit' ? { ...c, lag: c.lag * 100 } : c));
        const world = runScenario(pureDriver, initial, stale, prefill);
        expect(world.server.context().log.firstVersion(0)).toBeGreaterThan(1);
        checkNoOpLost(world);
        checkClientsConverge(world);
      }),
      { numRuns: 10 },
    );
  });

  it('applies most generated ops, so the scenarios exercise real edits', () => {
    const [initial] = fc.sample(tripStateArb, { seed: 7, numRuns: 1 });
    const commands = Array.from(
      { length: 90 },
      (_, i): Command =>
        i % 3 === 2 ? { t: 'commit', count: 3, each: false } : { t: 'submit', client: i % 4, seed: i * 7919, lag: 0 },
    );
    const world = runScenario(pureDriver, initial, commands);
    expect(world.store.length).toBeGreaterThan(15);
  });
});

describe('ops properties', () => {
  const segmentArb: fc.Arbitrary<Path[number]> = fc.oneof(
    fc.constantFrom('days', 'items', 'title', 'date', 'members'),
    fc.nat(3),
    fc.constantFrom('d1', 'd2', 'i1').map((id) => ({ id })),
  );
  const pathArb = fc.array(segmentArb, { maxLength: 5 });

  it('overlaps is symmetric', () => {
    fc.assert(fc.property(pathArb, pathArb, (a, b) => overlaps(a, b) === overlaps(b, a)));
  });

  it('a path overlaps each of its prefixes and itself', () => {
    fc.assert(
      fc.property(pathArb, fc.nat(), (p, k) => {
        const prefix = p.slice(0, k % (p.length + 1));
        return overlaps(p, prefix) && overlaps(prefix, p) && overlaps(p, p);
      }),
    );
  });

  it('paths that part at a field or an id never overlap', () => {
    fc.assert(
      fc.property(pathArb, pathArb, pathArb, (common, a, b) => {
        const x = [...common, 'title', ...a];
        const y = [...common, 'members', ...b];
        const ix = [...common, { id: 'd1' }, ...a];
        const iy = [...common, { id: 'd2' }, ...b];
        return !overlaps(x, y) && !overlaps(ix, iy);
      }),
    );
  });

  const stateAndOps = tripStateArb.chain((state) =>
    fc.tuple(fc.constant(state), fc.array(fc.integer(), { minLength: 1, maxLength: 8 })),
  );

  it('applyOp never mutates its input state', () => {
    fc.assert(
      fc.property(stateAndOps, ([initial, seeds]) => {
        let ids = 0;
        let state: unknown = deepFreeze(structuredClone(initial));
        for (const seed of seeds) {
          const before = structuredClone(state);
          const op = randomOp(state as Trip, new Rng(seed), () => `f${++ids}`);
          const r = applyOp(tripPlannerSchema, state, op);
          expect(state).toEqual(before);
          if (r.ok) state = deepFreeze(r.state);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a successful applyOp result always validates against the schema', () => {
    fc.assert(
      fc.property(stateAndOps, ([initial, seeds]) => {
        let ids = 0;
        let state: unknown = initial;
        for (const seed of seeds) {
          const op = randomOp(state as Trip, new Rng(seed), () => `f${++ids}`);
          const r = applyOp(tripPlannerSchema, state, op);
          if (!r.ok) continue;
          expect(validate(tripPlannerSchema, r.state), JSON.stringify(op)).toBeNull();
          state = r.state;
        }
      }),
      { numRuns: 300 },
    );
  });

  it('an applied op touches a path that overlaps the path it claims', () => {
    fc.assert(
      fc.property(stateAndOps, ([initial, seeds]) => {
        let ids = 0;
        let state: unknown = initial;
        for (const seed of seeds) {
          const op = randomOp(state as Trip, new Rng(seed), () => `f${++ids}`);
          const r = applyOp(tripPlannerSchema, state, op);
          if (!r.ok) continue;
          expect(overlaps(r.touched, claimedPath(tripPlannerSchema, op))).toBe(true);
          state = r.state;
        }
      }),
      { numRuns: 200 },
    );
  });

  it('replaying the same ops always gives the same state (clients and server agree)', () => {
    fc.assert(
      fc.property(stateAndOps, ([initial, seeds]) => {
        let ids = 0;
        let state: unknown = initial;
        const applied: Op[] = [];
        for (const seed of seeds) {
          const op = randomOp(state as Trip, new Rng(seed), () => `f${++ids}`);
          const r = applyOp(tripPlannerSchema, state, op);
          if (r.ok) {
            applied.push(structuredClone(op));
            state = r.state;
          }
        }
        expect(replay(structuredClone(initial), applied)).toEqual(state);
      }),
      { numRuns: 200 },
    );
  });
});
