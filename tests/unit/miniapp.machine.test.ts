import { describe, expect, it, vi } from 'vitest';
import { createActor, fromPromise, toPromise } from 'xstate';
import { tripPlannerSchema } from '../../actors/apps/tripPlanner.ts';
import {
  type CheckpointInput,
  type MiniappInput,
  type MiniappView,
  miniappMachine,
} from '../../actors/miniapp.machine.ts';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { LOG_WINDOW } from '../../actors/miniappSession.ts';
import type { LoggedOp } from '../../actors/OpLog.ts';
import { applyOp, type Op } from '../../actors/ops.ts';
import { Codes } from '../../src/errors.ts';
import { day, type Trip, trip } from './tripPlannerArbitraries.ts';

interface LoadInput {
  sessionId: string;
  after: number;
  before: number;
}

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A miniapp actor whose effects are recorded instead of performed; no database. */
function start(
  input: Partial<MiniappInput> = {},
  io: {
    loadOps?: (input: LoadInput) => Promise<LoggedOp[]>;
    saveCheckpoint?: (input: { sessionId: string; version: number; state: unknown }) => Promise<void>;
  } = {},
) {
  const sent: { conn: string; frame: ServerFrame }[] = [];
  const published: ServerFrame[] = [];
  const persisted: LoggedOp[] = [];
  const checkpoints: { version: number; state: unknown }[] = [];
  const attached: string[] = [];
  const detached: string[] = [];
  const participantsStored: string[] = [];
  const loads: LoadInput[] = [];
  const saves: { version: number; state: unknown }[] = [];
  const machine = miniappMachine.provide({
    actions: {
      send: (_, { conn, frame }) => sent.push({ conn, frame }),
      publish: (_, { frame }) => published.push(frame),
      attach: (_, { conn }) => attached.push(conn),
      detach: (_, { conn }) => detached.push(conn),
      persistOp: (_, { entry }) => persisted.push(entry),
      persistCheckpoint: (_, { version, state }) => checkpoints.push({ version, state }),
      persistParticipant: (_, { user, reply }) => {
        participantsStored.push(user);
        reply();
      },
    },
    actors: {
      loadOps: fromPromise<LoggedOp[], LoadInput>(async ({ input }) => {
        loads.push(input);
        return io.loadOps ? io.loadOps(input) : [];
      }),
      saveCheckpoint: fromPromise<void, CheckpointInput>(async ({ input }) => {
        saves.push({ version: input.version, state: input.state });
        if (io.saveCheckpoint) await io.saveCheckpoint(input);
      }),
    },
  });
  const actor = createActor(machine, {
    input: {
      sessionId: 's1',
      app: 'trip-planner',
      state: trip({ days: [day('d1'), day('d2')] }),
      version: 0,
      checkpointVersion: 0,
      participants: ['ann', 'bob'],
      log: [],
      ...input,
    },
  }).start();
  const framesTo = (conn: string) => sent.filter((s) => s.conn === conn).map((s) => s.frame);
  let n = 0;
  const request = (conn: string, by: string, o: Op, baseVersion: number, opId = `op${++n}`) =>
    ({ type: 'op', conn, by, opId, baseVersion, op: o, receivedAt: 0 }) as const;
  const op = (conn: string, by: string, o: Op, baseVersion: number, opId?: string) =>
    actor.send({ type: 'ops', requests: [request(conn, by, o, baseVersion, opId)] });
  /** Ops that arrived in one turn of the event loop: one message. */
  const batch = (...requests: ReturnType<typeof request>[]) => actor.send({ type: 'ops', requests });
  return {
    actor,
    sent,
    published,
    persisted,
    checkpoints,
    attached,
    detached,
    participantsStored,
    loads,
    saves,
    framesTo,
    op,
    request,
    batch,
  };
}

const setTitle = (value: string): Op => ({ kind: 'set', path: ['title'], value });

/** A stored history of `n` title edits by bob (as the store returns them: no socket, no state). */
function storedOps(n: number, first: Op | null = null): { log: LoggedOp[]; state: unknown } {
  const log: LoggedOp[] = [];
  let state: unknown = trip({ days: [day('d1'), day('d2')] });
  for (let v = 1; v <= n; v++) {
    const op = v === 5 && first ? first : setTitle(`t${v}`);
    const r = applyOp(tripPlannerSchema, state, op);
    if (!r.ok) throw new Error(r.message);
    state = r.state;
    log.push({ opId: `o${v}`, by: 'bob', version: v, op, touched: r.touched });
  }
  return { log, state };
}

describe('the miniapp machine: joining and leaving', () => {
  it('sends a joining socket a snapshot and publishes presence', () => {
    const h = start();
    h.actor.send({ type: 'join', conn: 'c1', user: 'ann' });
    expect(h.attached).toEqual(['c1']);
    expect(h.framesTo('c1')).toEqual([
      {
        type: 'snapshot',
        version: 0,
        state: h.actor.getSnapshot().context.state,
        participants: ['ann', 'bob'],
        online: ['ann'],
      },
    ]);
    expect(h.published).toEqual([{ type: 'presence', online: ['ann'] }]);
  });

  it('lists each online user once, however many sockets they have', () => {
    const h = start();
    h.actor.send({ type: 'join', conn: 'c1', user: 'bob' });
    h.actor.send({ type: 'join', conn: 'c2', user: 'ann' });
    h.actor.send({ type: 'join', conn: 'c3', user: 'ann' });
    expect(h.published.at(-1)).toEqual({ type: 'presence', online: ['ann', 'bob'] });
    expect(h.framesTo('c3')[0]).toMatchObject({ type: 'snapshot', online: ['ann', 'bob'] });
  });

  it('detaches a leaving socket and publishes presence to the others', () => {
    const h = start();
    h.actor.send({ type: 'join', conn: 'c1', user: 'ann' });
    h.actor.send({ type: 'join', conn: 'c2', user: 'bob' });
    h.actor.send({ type: 'leave', conn: 'c1' });
    expect(h.detached).toEqual(['c1']);
    expect(h.published.at(-1)).toEqual({ type: 'presence', online: ['bob'] });
  });

  it('attaches sockets handed over from another process without a snapshot, once, and publishes presence', () => {
    const h = start();
    h.actor.send({ type: 'join', conn: 'c1', user: 'ann' });
    h.actor.send({
      type: 'rejoin',
      conns: [
        { conn: 'c1', user: 'ann' },
        { conn: 'p2.c2', user: 'bob' },
        { conn: 'p2.c3', user: 'bob' },
      ],
    });
    expect(h.attached).toEqual(['c1', 'p2.c2', 'p2.c3']);
    expect(h.framesTo('p2.c2')).toEqual([]);
    expect(h.published.at(-1)).toEqual({ type: 'presence', online: ['ann', 'bob'] });
    const published = h.published.length;
    h.actor.send({ type: 'rejoin', conns: [{ conn: 'p2.c2', user: 'bob' }] });
    expect(h.published).toHaveLength(published);
    h.actor.send({ type: 'leave', conn: 'p2.c2' });
    h.actor.send({ type: 'leave', conn: 'p2.c3' });
    expect(h.published.at(-1)).toEqual({ type: 'presence', online: ['ann'] });
  });

  it('publishes no presence when the last socket leaves, and ignores unknown sockets', () => {
    const h = start();
    h.actor.send({ type: 'join', conn: 'c1', user: 'ann' });
    h.actor.send({ type: 'leave', conn: 'nope' });
    h.actor.send({ type: 'leave', conn: 'c1' });
    expect(h.detached).toEqual(['c1']);
    expect(h.published).toEqual([{ type: 'presence', online: ['ann'] }]);
  });
});

describe('the miniapp machine: ops and commits', () => {
  it('applies an op in memory and queues it for the commit, publishing nothing yet', () => {
    const h = start();
    h.actor.send({ type: 'join', conn: 'c1', user: 'ann' });
    h.published.length = 0;
    h.op('c1', 'ann', setTitle('Porto'), 0, 'x1');
    expect(h.persisted).toEqual([
      expect.objectContaining({
        opId: 'x1',
        by: 'ann',
        version: 1,
        op: setTitle('Porto'),
        touched: ['title'],
        conn: 'c1',
      }),
    ]);
    expect(h.persisted[0].state).toMatchObject({ title: 'Porto' });
    expect(h.published).toEqual([]);
    const ctx = h.actor.getSnapshot().context;
    expect([ctx.version, ctx.committedVersion]).toEqual([1, 0]);
  });

  it('publishes applied once the version is committed', () => {
    const h = start();
    h.op('c1', 'ann', setTitle('Porto'), 0, 'x1');
    h.actor.send({ type: 'committed', version: 1 });
    expect(h.published).toEqual([{ type: 'applied', opId: 'x1', by: 'ann', version: 1, op: setTitle('Porto') }]);
    expect(h.actor.getSnapshot().context.committedState).toMatchObject({ title: 'Porto' });
  });

  it('publishes applied frames in version order when several versions commit together', () => {
    const h = start();
    h.op('c1', 'ann', setTitle('a'), 0);
    h.op('c2', 'bob', { kind: 'insert', path: ['members'], value: 'cy' }, 0);
    h.op('c1', 'ann', { kind: 'set', path: ['dates', 'start'], value: '2026-05-01' }, 1);
    h.actor.send({ type: 'committed', version: 3 });
    h.actor.send({ type: 'committed', version: 2 });
    expect(h.published.map((f) => (f as { version: number }).version)).toEqual([1, 2, 3]);
  });

  it('shows a joining socket only the committed state', () => {
    const h = start();
    h.op('c1', 'ann', setTitle('not yet'), 0);
    h.actor.send({ type: 'join', conn: 'c2', user: 'bob' });
    expect(h.framesTo('c2')[0]).toMatchObject({ type: 'snapshot', version: 0, state: { title: 'Lisbon' } });
    h.actor.send({ type: 'committed', version: 1 });
    h.actor.send({ type: 'join', conn: 'c3', user: 'bob' });
    expect(h.framesTo('c3')[0]).toMatchObject({ type: 'snapshot', version: 1, state: { title: 'not yet' } });
  });

  it('answers an invalid op with invalid_op to the sender only', () => {
    const h = start();
    h.op('c1', 'ann', { kind: 'remove', path: ['days', { id: 'nope' }] }, 0, 'bad');
    expect(h.sent).toEqual([
      { conn: 'c1', frame: { type: 'error', code: Codes.invalid_op, message: expect.any(String), ref: 'bad' } },
    ]);
    expect(h.persisted).toEqual([]);
  });

  it('sends a conflict to the sender only, after the applied frame of the op it names', () => {
    const h = start();
    h.op('c1', 'ann', setTitle('ann'), 0, 'first');
    h.op('c2', 'bob', setTitle('bob'), 0, 'second');
    expect(h.sent).toEqual([]);
    h.actor.send({ type: 'committed', version: 1 });
    expect(h.published).toEqual([expect.objectContaining({ type: 'applied', opId: 'first' })]);
    expect(h.sent).toEqual([
      {
        conn: 'c2',
        frame: {
          type: 'conflict',
          opId: 'second',
          version: 1,
          ops: [{ opId: 'first', by: 'ann', version: 1, op: setTitle('ann') }],
        },
      },
    ]);
    expect(h.persisted).toHaveLength(1);
  });

  it('decides the ops of a batch in order, each against the ones before it', () => {
    const h = start();
    h.batch(
      h.request('c1', 'ann', setTitle('ann'), 0, 'a'),
      h.request('c2', 'bob', { kind: 'insert', path: ['members'], value: 'cy' }, 0, 'b'),
      h.request('c3', 'cy', setTitle('cy'), 0, 'c'),
      h.request('c1', 'ann', setTitle('ann again'), 0, 'd'),
    );
    // c: same field as a, from another socket, on a base before it; d: the same socket as a.
    expect(h.persisted.map((e) => [e.opId, e.version])).toEqual([
      ['a', 1],
      ['b', 2],
      ['d', 3],
    ]);
    h.actor.send({ type: 'committed', version: 3 });
    expect(h.published.map((f) => (f as { opId: string }).opId)).toEqual(['a', 'b', 'd']);
    // Judged after a and b: the conflict names both, and waited for their commit.
    expect(h.framesTo('c3')).toEqual([
      expect.objectContaining({ type: 'conflict', opId: 'c', version: 2, ops: [expect.anything(), expect.anything()] }),
    ]);
    expect(h.actor.getSnapshot().context.committedState).toMatchObject({ title: 'ann again', members: ['cy'] });
  });

  it('does not apply a resent op twice and answers it with its applied frame', () => {
    const h = start();
    h.op('c1', 'ann', { kind: 'insert', path: ['members'], value: 'cy' }, 0, 'once');
    h.actor.send({ type: 'committed', version: 1 });
    h.op('c9', 'ann', { kind: 'insert', path: ['members'], value: 'cy' }, 0, 'once');
    expect(h.persisted).toHaveLength(1);
    expect(h.framesTo('c9')).toEqual([expect.objectContaining({ type: 'applied', opId: 'once', version: 1 })]);
    expect(h.actor.getSnapshot().context.state).toMatchObject({ members: ['cy'] });
  });

  it('recognises resends of ops it was rehydrated with', () => {
    const { log, state } = storedOps(3);
    const h = start({ state, version: 3, checkpointVersion: 0, log });
    h.op('c1', 'bob', setTitle('t2'), 1, 'o2');
    expect(h.persisted).toEqual([]);
    expect(h.framesTo('c1')).toEqual([{ type: 'applied', opId: 'o2', by: 'bob', version: 2, op: setTitle('t2') }]);
  });

  it('writes a checkpoint after CHECKPOINT_EVERY ops since the last one', () => {
    const { log, state } = storedOps(99);
    const h = start({ state, version: 99, checkpointVersion: 0, log });
    h.op('c1', 'ann', setTitle('hundred'), 99);
    expect(h.checkpoints).toEqual([{ version: 100, state: expect.objectContaining({ title: 'hundred' }) }]);
  });

  it('answers a read with the committed view', () => {
    const h = start();
    h.op('c1', 'ann', setTitle('head only'), 0);
    let view: MiniappView | undefined;
    h.actor.send({ type: 'read', reply: (v) => (view = v) });
    expect(view).toEqual({
      id: 's1',
      app: 'trip-planner',
      version: 0,
      state: expect.objectContaining({ title: 'Lisbon' }),
      participants: ['ann', 'bob'],
    });
  });

  it('stores a new participant and answers at once for a known one', () => {
    const h = start();
    const replies: (Error | undefined)[] = [];
    h.actor.send({ type: 'addParticipant', user: 'cy', reply: (e) => replies.push(e) });
    h.actor.send({ type: 'addParticipant', user: 'ann', reply: (e) => replies.push(e) });
    expect(h.participantsStored).toEqual(['cy']);
    expect(replies).toEqual([undefined, undefined]);
    h.actor.send({ type: 'join', conn: 'c1', user: 'cy' });
    expect(h.framesTo('c1')[0]).toMatchObject({ participants: ['ann', 'bob', 'cy'] });
  });
});

describe('the miniapp machine: resume', () => {
  it('answers a resume from the in-memory log with the committed applied frames after since', () => {
    const h = start();
    h.op('c1', 'ann', setTitle('a'), 0);
    h.op('c1', 'ann', setTitle('b'), 1);
    h.op('c1', 'ann', setTitle('c'), 2);
    h.actor.send({ type: 'committed', version: 2 });
    h.actor.send({ type: 'resume', conn: 'c2', since: 0 });
    expect(h.framesTo('c2').map((f) => [f.type, (f as { version: number }).version])).toEqual([
      ['applied', 1],
      ['applied', 2],
    ]);
    expect(h.loads).toEqual([]);
  });

  it('loads older ops from the store while tagged busy, then answers the resume', async () => {
    const { log, state } = storedOps(LOG_WINDOW + 10);
    const gate = deferred<void>();
    const h = start(
      { state, version: LOG_WINDOW + 10, log: log.slice(10) },
      {
        loadOps: async ({ after, before }) => {
          await gate.promise;
          return log.filter((e) => e.version > after && e.version < before);
        },
      },
    );
    h.actor.send({ type: 'resume', conn: 'c1', since: 3 });
    expect(h.actor.getSnapshot().hasTag('busy')).toBe(true);
    expect(h.actor.getSnapshot().value).toBe('loadingHistory');
    await vi.waitFor(() => expect(h.loads).toEqual([{ sessionId: 's1', after: 3, before: 11 }]));
    expect(h.sent).toEqual([]);
    gate.resolve();
    await vi.waitFor(() => expect(h.actor.getSnapshot().hasTag('busy')).toBe(false));
    expect(h.actor.getSnapshot().value).toBe('active');
    const versions = h.framesTo('c1').map((f) => (f as { version: number }).version);
    expect(versions).toEqual(Array.from({ length: LOG_WINDOW + 7 }, (_, i) => i + 4));
  });

  it('sends a snapshot when the ops after since are no longer stored', async () => {
    const { log, state } = storedOps(LOG_WINDOW + 10);
    const h = start({ state, version: LOG_WINDOW + 10, log: log.slice(10) }, { loadOps: async () => log.slice(8, 10) });
    h.actor.send({ type: 'resume', conn: 'c1', since: 3 });
    await vi.waitFor(() => expect(h.framesTo('c1')).toHaveLength(1));
    expect(h.framesTo('c1')[0]).toMatchObject({ type: 'snapshot', version: LOG_WINDOW + 10 });
  });

  it('checks an op older than the log against ops loaded from the store', async () => {
    const { log, state } = storedOps(LOG_WINDOW + 10, { kind: 'set', path: ['dates', 'start'], value: '2026-01-01' });
    const h = start(
      { state, version: LOG_WINDOW + 10, log: log.slice(10) },
      { loadOps: async ({ after, before }) => log.filter((e) => e.version > after && e.version < before) },
    );
    h.op('c1', 'ann', { kind: 'set', path: ['dates', 'start'], value: '2026-02-02' }, 2, 'stale');
    await vi.waitFor(() => expect(h.framesTo('c1')).toHaveLength(1));
    expect(h.loads).toEqual([{ sessionId: 's1', after: 2, before: 11 }]);
    expect(h.framesTo('c1')[0]).toMatchObject({ type: 'conflict', opId: 'stale', version: LOG_WINDOW + 10 });
    h.op('c1', 'ann', { kind: 'set', path: ['dates', 'end'], value: '2026-12-31' }, 6, 'fine');
    await vi.waitFor(() => expect(h.persisted).toHaveLength(1));
    expect(h.persisted[0]).toMatchObject({ opId: 'fine', version: LOG_WINDOW + 11 });
    expect(h.actor.getSnapshot().context.deferred).toBeNull();
  });

  it('loads older ops once for a batch, from the oldest base any of its ops needs', async () => {
    const { log, state } = storedOps(LOG_WINDOW + 10, { kind: 'set', path: ['dates', 'start'], value: '2026-01-01' });
    const h = start(
      { state, version: LOG_WINDOW + 10, log: log.slice(10) },
      { loadOps: async ({ after, before }) => log.filter((e) => e.version > after && e.version < before) },
    );
    h.batch(
      h.request('c1', 'ann', { kind: 'set', path: ['dates', 'end'], value: '2026-12-31' }, 6, 'fine'),
      h.request('c2', 'cy', { kind: 'set', path: ['dates', 'start'], value: '2026-02-02' }, 2, 'stale'),
      h.request('c3', 'dan', { kind: 'insert', path: ['members'], value: 'dan' }, LOG_WINDOW + 10, 'fresh'),
    );
    expect(h.actor.getSnapshot().hasTag('busy')).toBe(true);
    await vi.waitFor(() => expect(h.persisted).toHaveLength(2));
    expect(h.loads).toEqual([{ sessionId: 's1', after: 2, before: 11 }]);
    expect(h.persisted.map((e) => [e.opId, e.version])).toEqual([
      ['fine', LOG_WINDOW + 11],
      ['fresh', LOG_WINDOW + 12],
    ]);
    h.actor.send({ type: 'committed', version: LOG_WINDOW + 12 });
    expect(h.framesTo('c2')).toEqual([
      expect.objectContaining({ type: 'conflict', opId: 'stale', version: LOG_WINDOW + 11 }),
    ]);
    expect(h.actor.getSnapshot().context.deferred).toBeNull();
  });

  it('answers every op of a batch db_unavailable when older ops cannot be read', async () => {
    const { log, state } = storedOps(LOG_WINDOW + 10);
    const h = start(
      { state, version: LOG_WINDOW + 10, log: log.slice(10) },
      { loadOps: async () => Promise.reject(new Error('pg down')) },
    );
    h.batch(h.request('c1', 'ann', setTitle('x'), 2, 'stale'), h.request('c2', 'bob', setTitle('y'), 300, 'new'));
    await vi.waitFor(() => expect(h.actor.getSnapshot().value).toBe('active'));
    expect(h.sent).toEqual([
      { conn: 'c1', frame: { type: 'error', code: Codes.db_unavailable, message: expect.any(String), ref: 'stale' } },
      { conn: 'c2', frame: { type: 'error', code: Codes.db_unavailable, message: expect.any(String), ref: 'new' } },
    ]);
    expect(h.persisted).toEqual([]);
  });

  it('answers db_unavailable when older ops cannot be read, and goes back to work', async () => {
    const { log, state } = storedOps(LOG_WINDOW + 10);
    const h = start(
      { state, version: LOG_WINDOW + 10, log: log.slice(10) },
      { loadOps: async () => Promise.reject(new Error('pg down')) },
    );
    h.op('c1', 'ann', setTitle('x'), 2, 'stale');
    await vi.waitFor(() => expect(h.actor.getSnapshot().value).toBe('active'));
    h.actor.send({ type: 'resume', conn: 'c2', since: 2 });
    await vi.waitFor(() => expect(h.framesTo('c2')).toHaveLength(1));
    expect(h.framesTo('c1')).toEqual([
      { type: 'error', code: Codes.db_unavailable, message: expect.any(String), ref: 'stale' },
    ]);
    expect(h.framesTo('c2')).toEqual([{ type: 'error', code: Codes.db_unavailable, message: expect.any(String) }]);
    expect(h.actor.getSnapshot().context.deferred).toBeNull();
  });

  it('publishes commits that arrive while it is loading history', async () => {
    const { log, state } = storedOps(20);
    const gate = deferred<LoggedOp[]>();
    const h = start({ state, version: 20, log: log.slice(10) }, { loadOps: () => gate.promise });
    h.op('c1', 'ann', { kind: 'set', path: ['dates', 'end'], value: '2026-12-31' }, 20, 'fresh');
    h.actor.send({ type: 'resume', conn: 'c2', since: 1 });
    expect(h.actor.getSnapshot().hasTag('busy')).toBe(true);
    h.actor.send({ type: 'committed', version: 21 });
    expect(h.published).toEqual([expect.objectContaining({ type: 'applied', opId: 'fresh', version: 21 })]);
    gate.resolve(log.slice(1, 10));
    await vi.waitFor(() => expect(h.actor.getSnapshot().hasTag('busy')).toBe(false));
    expect(h.framesTo('c2').map((f) => (f as { version: number }).version)).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 2),
    );
  });

  /**
   * More than LOG_WINDOW ops in flight (a slow group commit), the first 40 committed; a request
   * needs ops older than the log; the rest commit while they load, which trims the log.
   */
  function trimmedWhileLoading() {
    const gate = deferred<void>();
    let store: LoggedOp[] = [];
    const h = start(
      {},
      {
        loadOps: async ({ after, before }) => {
          await gate.promise;
          return store.filter((e) => e.version > after && e.version < before);
        },
      },
    );
    const inFlight = LOG_WINDOW + 44;
    for (let v = 0; v < inFlight; v++) h.op('c1', 'ann', setTitle(`t${v + 1}`), v);
    store = h.persisted.map(({ state: _s, conn: _c, ...e }) => e);
    h.actor.send({ type: 'committed', version: 40 });
    expect(h.actor.getSnapshot().context.log.firstVersion(0)).toBe(41);
    const commitTheRest = () => h.actor.send({ type: 'committed', version: inFlight });
    return { h, gate, commitTheRest, inFlight };
  }

  // Documents a bug: the commit trims version 11 out of the log while ops before 11 load, so
  // the loaded history no longer reaches the log and every op since `since` looks pruned.
  it('answers a resume with every stored op even when a commit trims the log while older ops load', async () => {
    const { h, gate, commitTheRest, inFlight } = trimmedWhileLoading();
    h.actor.send({ type: 'resume', conn: 'c2', since: 5 });
    expect(h.actor.getSnapshot().hasTag('busy')).toBe(true);
    commitTheRest();
    gate.resolve();
    await vi.waitFor(() => expect(h.actor.getSnapshot().hasTag('busy')).toBe(false));
    expect(h.loads).toEqual([{ sessionId: 's1', after: 5, before: 41 }]);
    expect(h.framesTo('c2').map((f) => `${f.type} ${(f as { version: number }).version}`)).toEqual(
      Array.from({ length: inFlight - 5 }, (_, i) => `applied ${i + 6}`),
    );
  });

  // Documents the same bug for ops: a stale op that clashes with nothing is refused base_too_old.
  it('decides a stale op on its merits even when a commit trims the log while older ops load', async () => {
    const { h, gate, commitTheRest, inFlight } = trimmedWhileLoading();
    h.op('c2', 'bob', { kind: 'set', path: ['dates', 'end'], value: '2026-12-31' }, 5, 'stale-but-fine');
    expect(h.actor.getSnapshot().hasTag('busy')).toBe(true);
    commitTheRest();
    gate.resolve();
    await vi.waitFor(() => expect(h.actor.getSnapshot().hasTag('busy')).toBe(false));
    expect(h.framesTo('c2')).toEqual([]);
    expect(h.persisted.at(-1)).toMatchObject({ opId: 'stale-but-fine', version: inFlight + 1 });
  });
});

describe('the miniapp machine: stopping', () => {
  it('passivates by saving a checkpoint of the head, tagged busy, then stops with reason passivated', async () => {
    const gate = deferred<void>();
    const h = start({}, { saveCheckpoint: () => gate.promise });
    h.op('c1', 'ann', setTitle('last'), 0);
    h.actor.send({ type: 'committed', version: 1 });
    h.actor.send({ type: 'passivate' });
    expect(h.actor.getSnapshot().value).toBe('passivating');
    expect(h.actor.getSnapshot().hasTag('busy')).toBe(true);
    await vi.waitFor(() =>
      expect(h.saves).toEqual([{ version: 1, state: expect.objectContaining({ title: 'last' }) }]),
    );
    gate.resolve();
    await expect(toPromise(h.actor)).resolves.toEqual({ reason: 'passivated' });
    expect(h.actor.getSnapshot().status).toBe('done');
    expect(h.actor.getSnapshot().value).toBe('stopped');
  });

  it('stops with reason failed when the checkpoint cannot be saved', async () => {
    const h = start({}, { saveCheckpoint: async () => Promise.reject(new Error('disk full')) });
    h.actor.send({ type: 'passivate' });
    const output = await toPromise(h.actor);
    expect(output.reason).toBe('failed');
    expect(output.message).toContain('checkpoint failed');
    expect(output.message).toContain('disk full');
  });

  it('stops with the reason of a failed write', async () => {
    const h = start();
    h.op('c1', 'ann', setTitle('never durable'), 0);
    h.actor.send({ type: 'writeFailed', reason: 'fenced', message: 'another node owns s1' });
    await expect(toPromise(h.actor)).resolves.toEqual({ reason: 'fenced', message: 'another node owns s1' });
    expect(h.published).toEqual([]);
  });

  it('stops from any state when a write fails, even while loading history', async () => {
    const { log, state } = storedOps(LOG_WINDOW + 10);
    const h = start({ state, version: LOG_WINDOW + 10, log: log.slice(10) }, { loadOps: () => new Promise(() => {}) });
    h.actor.send({ type: 'resume', conn: 'c1', since: 1 });
    expect(h.actor.getSnapshot().value).toBe('loadingHistory');
    h.actor.send({ type: 'writeFailed', reason: 'failed', message: 'commit failed' });
    await expect(toPromise(h.actor)).resolves.toEqual({ reason: 'failed', message: 'commit failed' });
  });
});

describe('the miniapp machine: state shape', () => {
  it('keeps head and committed state valid trip-planner states through a run of ops', () => {
    const h = start();
    const ops: Op[] = [
      { kind: 'insert', path: ['days'], value: day('d3') },
      { kind: 'set', path: ['days', { id: 'd3' }, 'date'], value: '2026-05-03' },
      { kind: 'remove', path: ['days', 0] },
    ];
    for (const [i, o] of ops.entries()) h.op('c1', 'ann', o, i);
    h.actor.send({ type: 'committed', version: 3 });
    const ctx = h.actor.getSnapshot().context;
    expect(ctx.committedState).toEqual(ctx.state);
    expect((ctx.state as Trip).days.map((d) => d.id)).toEqual(['d2', 'd3']);
  });
});
