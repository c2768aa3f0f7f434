import { describe, expect, it } from 'vitest';
import { tripPlannerSchema } from '../../actors/apps/tripPlanner.ts';
import { Conns } from '../../actors/Conns.ts';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import {
  appliedFrame,
  CHECKPOINT_EVERY,
  type Decision,
  decideCommitted,
  decideJoin,
  decideLeave,
  decideOp,
  decideRejoin,
  decideResume,
  type Effect,
  LOG_WINDOW,
  type MiniappContext,
  needsHistory,
  type OpRequest,
  snapshotFrame,
} from '../../actors/miniappSession.ts';
import { type LoggedOp, OpLog } from '../../actors/OpLog.ts';
import { applyOp, type Op } from '../../actors/ops.ts';
import { Codes } from '../../src/errors.ts';
import { day, item, type Trip, trip } from './tripPlannerArbitraries.ts';

function start(
  state: Trip = trip({ days: [day('d1', [item('i1')]), day('d2')], members: ['ann', 'bob'] }),
): MiniappContext {
  return {
    sessionId: 's1',
    app: 'trip-planner',
    state,
    version: 0,
    committedState: state,
    committedVersion: 0,
    checkpointVersion: 0,
    participants: ['ann', 'bob'],
    log: new OpLog([], LOG_WINDOW),
    conns: new Conns([
      ['a1', 'ann'],
      ['a2', 'ann'],
      ['b1', 'bob'],
    ]),
    held: [],
    deferred: null,
  };
}

let seq = 0;
function req(conn: string, op: Op, baseVersion: number, opId = `op${++seq}`): OpRequest {
  const by = conn.startsWith('a') ? 'ann' : 'bob';
  return { type: 'op', conn, by, opId, baseVersion, op, receivedAt: 0 };
}

const merge = (ctx: MiniappContext, d: Decision): MiniappContext => ({ ...ctx, ...d.context });

/** Decides an op and merges its context change. */
function submit(ctx: MiniappContext, r: OpRequest, history: LoggedOp[] = []): [MiniappContext, Effect[]] {
  const d = decideOp(ctx, r, history);
  return [merge(ctx, d), d.effects];
}

function commit(ctx: MiniappContext, version = ctx.version): [MiniappContext, Effect[]] {
  const d = decideCommitted(ctx, version);
  return [merge(ctx, d), d.effects];
}

/** Submits ops one after another (each against the version it sees), committing each. */
function applyAll(ctx: MiniappContext, ops: [string, Op][]): MiniappContext {
  let c = ctx;
  for (const [conn, op] of ops) {
    [c] = submit(c, req(conn, op, c.version));
    [c] = commit(c);
  }
  return c;
}

const sent = (effects: Effect[]) =>
  effects.filter((e): e is Extract<Effect, { type: 'send' }> => e.type === 'send').map((e) => e.params);
const published = (effects: Effect[]) =>
  effects.filter((e): e is Extract<Effect, { type: 'publish' }> => e.type === 'publish').map((e) => e.params.frame);
const kinds = (effects: Effect[]) => effects.map((e) => e.type);

const setTitle = (value: string): Op => ({ kind: 'set', path: ['title'], value });
const setDayDate = (id: string | number, value: string | null): Op => ({
  kind: 'set',
  path: ['days', typeof id === 'number' ? id : { id }, 'date'],
  value,
});

describe('decideOp: applying', () => {
  it('applies an op at the current version: new head, a log entry and a persistOp effect, nothing visible yet', () => {
    const ctx = start();
    const r = req('a1', setTitle('Porto'), 0, 'o1');
    const d = decideOp(ctx, r);
    expect(d.context.version).toBe(1);
    expect((d.context.state as Trip).title).toBe('Porto');
    expect(ctx.log.toArray()).toEqual([
      expect.objectContaining({ opId: 'o1', by: 'ann', version: 1, op: r.op, touched: ['title'], conn: 'a1' }),
    ]);
    expect(kinds(d.effects)).toEqual(['persistOp']);
    expect(d.effects[0]).toMatchObject({ params: { sessionId: 's1', entry: { opId: 'o1', version: 1 } } });
    expect(d.context.committedVersion).toBeUndefined();
    expect(d.context.committedState).toBeUndefined();
  });

  it('leaves the log and the state untouched when it refuses an op or answers a conflict', () => {
    const ctx = applyAll(start(), [['b1', setTitle('bob')]]);
    const before = { log: ctx.log.toArray(), state: ctx.state };
    decideOp(ctx, req('a1', setTitle(''), 1));
    decideOp(ctx, req('a1', setTitle('ann'), 0));
    decideOp(ctx, req('a1', setTitle('ann'), 7));
    expect(ctx.log.toArray()).toEqual(before.log);
    expect(ctx.state).toBe(before.state);
  });

  it('refuses an op that would leave the state invalid with invalid_op, referring to the opId', () => {
    const [, effects] = submit(start(), req('a1', setTitle(''), 0, 'bad'));
    expect(sent(effects)).toEqual([
      { conn: 'a1', frame: { type: 'error', code: Codes.invalid_op, message: expect.any(String), ref: 'bad' } },
    ]);
  });

  it('leaves the context unchanged when it refuses an op', () => {
    const d = decideOp(start(), req('a1', { kind: 'remove', path: ['days', { id: 'nope' }] }, 0));
    expect(d.context).toEqual({});
  });

  it('refuses a baseVersion ahead of the session with invalid_base_version', () => {
    const [, effects] = submit(start(), req('a1', setTitle('x'), 1, 'ahead'));
    expect(sent(effects)[0].frame).toMatchObject({ type: 'error', code: Codes.invalid_base_version, ref: 'ahead' });
  });

  it('throws for a session of an app the server does not host', () => {
    expect(() => decideOp({ ...start(), app: 'chess' }, req('a1', setTitle('x'), 0))).toThrow(/unknown app/);
  });

  it('writes a checkpoint every CHECKPOINT_EVERY ops', () => {
    let ctx = start();
    const checkpoints: number[] = [];
    for (let i = 1; i <= CHECKPOINT_EVERY * 2 + 1; i++) {
      const [next, effects] = submit(ctx, req('a1', setTitle(`t${i}`), ctx.version));
      for (const e of effects) if (e.type === 'persistCheckpoint') checkpoints.push(e.params.version);
      [ctx] = commit(next);
    }
    expect(checkpoints).toEqual([CHECKPOINT_EVERY, CHECKPOINT_EVERY * 2]);
    expect(ctx.checkpointVersion).toBe(CHECKPOINT_EVERY * 2);
  });

  it('stores the state after the op in the checkpoint effect', () => {
    const ctx = { ...start(), version: CHECKPOINT_EVERY - 1, committedVersion: CHECKPOINT_EVERY - 1 };
    const [, effects] = submit(ctx, req('a1', setTitle('cp'), ctx.version));
    const cp = effects.find((e) => e.type === 'persistCheckpoint');
    expect(cp).toMatchObject({ params: { version: CHECKPOINT_EVERY, state: { title: 'cp' } } });
  });
});

describe('decideOp: field-level optimistic locking', () => {
  it('applies a stale op when nothing since its base touched an overlapping path', () => {
    const [ctx, effects] = submit(
      applyAll(start(), [['b1', setTitle('by bob')]]),
      req('a1', { kind: 'set', path: ['dates', 'start'], value: '2026-05-01' }, 0),
    );
    expect(kinds(effects)).toEqual(['persistOp']);
    expect(ctx.version).toBe(2);
    expect(ctx.state).toMatchObject({ title: 'by bob', dates: { start: '2026-05-01' } });
  });

  it('answers conflict, changing nothing, when an op since its base touched the same path', () => {
    const ctx = applyAll(start(), [['b1', setTitle('by bob')]]);
    const d = decideOp(ctx, req('a1', setTitle('by ann'), 0, 'late'));
    expect(d.context).toEqual({});
    expect(sent(d.effects)).toEqual([
      {
        conn: 'a1',
        frame: {
          type: 'conflict',
          opId: 'late',
          version: 1,
          ops: [{ opId: ctx.log.at(1)?.opId, by: 'bob', version: 1, op: setTitle('by bob') }],
        },
      },
    ]);
  });

  it('lists every op applied after the base in the conflict, not only the overlapping ones', () => {
    const ctx = applyAll(start(), [
      ['b1', setTitle('t1')],
      ['b1', { kind: 'set', path: ['dates', 'end'], value: '2026-06-01' }],
      ['b1', setTitle('t3')],
    ]);
    const [, effects] = submit(ctx, req('a1', setTitle('mine'), 1));
    const frame = sent(effects)[0].frame as Extract<ServerFrame, { type: 'conflict' }>;
    expect(frame.version).toBe(3);
    expect(frame.ops.map((o) => o.version)).toEqual([2, 3]);
    expect(Object.keys(frame.ops[0]).sort()).toEqual(['by', 'op', 'opId', 'version']);
  });

  it('conflicts when an op since the base touched a prefix of the path (a parent replaced)', () => {
    const ctx = applyAll(start(), [['b1', { kind: 'set', path: ['dates'], value: null }]]);
    const [, effects] = submit(ctx, req('a1', { kind: 'set', path: ['dates', 'start'], value: '2026-01-01' }, 0));
    expect(sent(effects)[0].frame.type).toBe('conflict');
  });

  it('conflicts when an op since the base touched something below the path (a child edited)', () => {
    const ctx = applyAll(start(), [['b1', setDayDate('d1', '2026-05-01')]]);
    const [, effects] = submit(ctx, req('a1', { kind: 'remove', path: ['days', { id: 'd1' }] }, 0));
    expect(sent(effects)[0].frame.type).toBe('conflict');
  });

  it('does not conflict when adding a day while another day is edited', () => {
    const ctx = applyAll(start(), [['b1', setDayDate('d1', '2026-05-01')]]);
    const [next, effects] = submit(ctx, req('a1', { kind: 'insert', path: ['days'], index: 0, value: day('d3') }, 0));
    expect(kinds(effects)).toEqual(['persistOp']);
    expect((next.state as Trip).days.map((d) => d.id)).toEqual(['d3', 'd1', 'd2']);
  });

  it('does not conflict when editing a day after another day was added', () => {
    const ctx = applyAll(start(), [['b1', { kind: 'insert', path: ['days'], value: day('d3') }]]);
    const [, effects] = submit(ctx, req('a1', setDayDate('d2', '2026-05-02'), 0));
    expect(kinds(effects)).toEqual(['persistOp']);
  });

  it('does not conflict between edits of two different items of the same day', () => {
    const ctx = applyAll(start(), [
      ['b1', { kind: 'insert', path: ['days', { id: 'd1' }, 'items'], value: item('i2') }],
    ]);
    const [, effects] = submit(
      ctx,
      req('a1', { kind: 'set', path: ['days', { id: 'd1' }, 'items', { id: 'i1' }, 'title'], value: 'x' }, 0),
    );
    expect(kinds(effects)).toEqual(['persistOp']);
  });

  it('conflicts when two stale ops insert items with the same id', () => {
    const ctx = applyAll(start(), [['b1', { kind: 'insert', path: ['days'], value: day('d3') }]]);
    const [, effects] = submit(
      ctx,
      req('a1', { kind: 'insert', path: ['days'], value: day('d3', [], '2026-01-01') }, 0),
    );
    expect(sent(effects)[0].frame.type).toBe('conflict');
  });

  it('conflicts when a stale op addresses a day by index after the days array changed shape', () => {
    const ctx = applyAll(start(), [['b1', { kind: 'insert', path: ['days'], index: 0, value: day('d0') }]]);
    const [, effects] = submit(ctx, req('a1', setDayDate(0, '2026-05-01'), 0));
    expect(sent(effects)[0].frame.type).toBe('conflict');
    const [, removed] = submit(ctx, req('a1', { kind: 'remove', path: ['days', 1] }, 0));
    expect(sent(removed)[0].frame.type).toBe('conflict');
  });

  it('treats an index-addressed insert into an array of plain values as touching the whole array', () => {
    const ctx = applyAll(start(), [['b1', { kind: 'insert', path: ['members'], index: 0, value: 'cy' }]]);
    const [, setByIndex] = submit(ctx, req('a1', { kind: 'set', path: ['members', 1], value: 'bea' }, 0));
    expect(sent(setByIndex)[0].frame.type).toBe('conflict');
    const [, removeByIndex] = submit(ctx, req('a1', { kind: 'remove', path: ['members', 0] }, 0));
    expect(sent(removeByIndex)[0].frame.type).toBe('conflict');
    const [, append] = submit(ctx, req('a1', { kind: 'insert', path: ['members'], value: 'dee' }, 0));
    expect(sent(append)[0].frame.type).toBe('conflict');
  });

  it('treats an index-addressed remove in an array of plain values as touching the whole array', () => {
    const ctx = applyAll(start(), [['b1', { kind: 'remove', path: ['members', 1] }]]);
    const [, effects] = submit(ctx, req('a1', { kind: 'set', path: ['members', 0], value: 'annie' }, 0));
    expect(sent(effects)[0].frame.type).toBe('conflict');
  });

  it('does not conflict between sets of two different plain values (sets do not shift indexes)', () => {
    const ctx = applyAll(start(), [['b1', { kind: 'set', path: ['members', 1], value: 'bobby' }]]);
    const [, effects] = submit(ctx, req('a1', { kind: 'set', path: ['members', 0], value: 'annie' }, 0));
    expect(kinds(effects)).toEqual(['persistOp']);
  });

  it('never conflicts with ops sent earlier on the same socket', () => {
    let ctx = start();
    let effects: Effect[];
    [ctx] = submit(ctx, req('a1', setTitle('first'), 0));
    [ctx, effects] = submit(ctx, req('a1', setTitle('second'), 0));
    expect(kinds(effects)).toEqual(['persistOp']);
    [ctx, effects] = submit(ctx, req('a1', { kind: 'set', path: ['members', 0], value: 'x' }, 0));
    expect(kinds(effects)).toEqual(['persistOp']);
    expect(ctx.version).toBe(3);
  });

  it('conflicts with a later op of the same socket that was applied first (it overtook this one in a failover)', () => {
    let ctx = start();
    let effects: Effect[];
    [ctx] = submit(ctx, { ...req('a1', setTitle('second'), 0), seq: 2 });
    // The socket's first op arrives after its second: it must not replace the newer title.
    [ctx, effects] = submit(ctx, { ...req('a1', setTitle('first'), 0, 'first'), seq: 1 });
    expect(effects).toEqual([]);
    expect(ctx.held[0].frame).toMatchObject({ type: 'conflict', opId: 'first', ops: [{ version: 1 }] });
    expect(ctx.state).toMatchObject({ title: 'second' });
    // An overtaken op that touches something else is applied: their order does not matter.
    [ctx, effects] = submit(ctx, { ...req('a1', { kind: 'set', path: ['members', 0], value: 'x' }, 0), seq: 1 });
    expect(kinds(effects)).toEqual(['persistOp']);
    // And ops in their socket's order still never conflict with each other.
    [ctx, effects] = submit(ctx, { ...req('a1', setTitle('third'), 0), seq: 3 });
    expect(kinds(effects)).toEqual(['persistOp']);
    expect(ctx.state).toMatchObject({ title: 'third' });
  });

  it('conflicts with ops from another socket of the same user', () => {
    const ctx = applyAll(start(), [['a2', setTitle('from my phone')]]);
    const [, effects] = submit(ctx, req('a1', setTitle('from my laptop'), 0));
    expect(sent(effects)[0].frame.type).toBe('conflict');
  });

  it('treats ops reloaded from the store (no socket) as from another socket', () => {
    const ctx = applyAll(start(), [['a1', setTitle('before restart')]]);
    const reloaded = {
      ...ctx,
      log: new OpLog(
        ctx.log.toArray().map(({ conn: _c, ...e }) => e),
        LOG_WINDOW,
      ),
    };
    const [, effects] = submit(reloaded, req('a1', setTitle('after restart'), 0));
    expect(sent(effects)[0].frame.type).toBe('conflict');
  });

  it('still conflicts when an op from another socket overlaps, even if the same socket also sent one', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', setTitle('mine'), 0));
    [ctx] = submit(ctx, req('b1', setTitle('bob'), 1));
    const d = decideOp(ctx, req('a1', setTitle('mine again'), 0, 'again'));
    expect(d.effects).toEqual([]);
    expect(d.context.held?.[0].frame).toMatchObject({
      type: 'conflict',
      opId: 'again',
      ops: [
        { version: 1, by: 'ann' },
        { version: 2, by: 'bob' },
      ],
    });
  });

  it('is decided by the op applied first: a second stale op loses to it', () => {
    let ctx = start();
    let effects: Effect[];
    [ctx, effects] = submit(ctx, req('a1', setTitle('ann'), 0));
    expect(kinds(effects)).toEqual(['persistOp']);
    [ctx] = commit(ctx);
    [ctx, effects] = submit(ctx, req('b1', setTitle('bob'), 0));
    expect(sent(effects)[0].frame).toMatchObject({ type: 'conflict', version: 1 });
    expect(ctx.state).toMatchObject({ title: 'ann' });
  });
});

describe('decideOp: conflicts that mention uncommitted ops', () => {
  it('holds the conflict until the ops it names are committed', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('b1', setTitle('bob'), 0, 'b-op'));
    const d = decideOp(ctx, req('a1', setTitle('ann'), 0, 'a-op'));
    expect(d.effects).toEqual([]);
    expect(d.context.held).toEqual([
      { after: 1, conn: 'a1', frame: expect.objectContaining({ type: 'conflict', opId: 'a-op' }) },
    ]);
  });

  it('sends the held conflict right after the applied frames it names', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('b1', setTitle('bob'), 0, 'b-op'));
    ctx = merge(ctx, decideOp(ctx, req('a1', setTitle('ann'), 0, 'a-op')));
    const [after, effects] = commit(ctx, 1);
    expect(
      effects.map((e) =>
        e.type === 'publish'
          ? `publish ${e.params.frame.type}`
          : `${e.type} ${(e.params as { frame: ServerFrame }).frame.type}`,
      ),
    ).toEqual(['publish applied', 'send conflict']);
    expect(sent(effects)[0]).toMatchObject({
      conn: 'a1',
      frame: { opId: 'a-op', version: 1, ops: [{ opId: 'b-op' }] },
    });
    expect(after.held).toEqual([]);
  });

  it('keeps a held conflict while only part of what it names is committed', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('b1', setTitle('one'), 0));
    [ctx] = submit(ctx, req('b1', setTitle('two'), 1));
    ctx = merge(ctx, decideOp(ctx, req('a1', setTitle('ann'), 0, 'a-op')));
    let effects: Effect[];
    [ctx, effects] = commit(ctx, 1);
    expect(sent(effects)).toEqual([]);
    expect(ctx.held).toHaveLength(1);
    [ctx, effects] = commit(ctx, 2);
    expect(sent(effects).map((s) => s.frame)).toEqual([
      expect.objectContaining({ type: 'conflict', opId: 'a-op', version: 2 }),
    ]);
  });

  it('sends a conflict at once when everything it names is committed', () => {
    const ctx = applyAll(start(), [['b1', setTitle('bob')]]);
    const d = decideOp(ctx, req('a1', setTitle('ann'), 0));
    expect(d.context.held).toBeUndefined();
    expect(sent(d.effects)).toHaveLength(1);
  });
});

describe('decideOp: resent ops', () => {
  it('answers a resent committed op with its original applied frame, to the sender only, without applying it again', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', { kind: 'insert', path: ['members'], value: 'cy' }, 0, 'once'));
    [ctx] = commit(ctx);
    const d = decideOp(ctx, req('a2', { kind: 'insert', path: ['members'], value: 'cy' }, 0, 'once'));
    expect(d.context).toEqual({});
    expect(d.effects).toEqual([
      {
        type: 'send',
        params: {
          conn: 'a2',
          frame: {
            type: 'applied',
            opId: 'once',
            by: 'ann',
            version: 1,
            op: { kind: 'insert', path: ['members'], value: 'cy' },
          },
        },
      },
    ]);
  });

  it('answers nothing for a resent op that is not committed yet (its applied frame is coming)', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', setTitle('x'), 0, 'pending'));
    const d = decideOp(ctx, req('a1', setTitle('x'), 0, 'pending'));
    expect(d).toEqual({ context: {}, effects: [] });
  });

  it('recognises a resend whatever its baseVersion', () => {
    let ctx = applyAll(start(), [['a1', setTitle('x')]]);
    const opId = ctx.log.at(1)?.opId as string;
    ctx = applyAll(ctx, [['b1', setTitle('y')]]);
    const d = decideOp(ctx, req('a1', setTitle('x'), 2, opId));
    expect(d.effects).toEqual([{ type: 'send', params: { conn: 'a1', frame: appliedFrame(ctx.log.at(1)!) } }]);
  });

  it('treats the same opId from another user as a different op', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', setTitle('x'), 0, 'same'));
    [ctx] = commit(ctx);
    const [, effects] = submit(ctx, req('b1', { kind: 'set', path: ['dates', 'end'], value: '2026-01-01' }, 1, 'same'));
    expect(kinds(effects)).toEqual(['persistOp']);
  });
});

describe('decideOp: ops older than the in-memory log', () => {
  /** A session at version 300 whose log holds only the last LOG_WINDOW ops (titles t1…t300). */
  function longSession(): { ctx: MiniappContext; history: LoggedOp[] } {
    const entries: LoggedOp[] = [];
    let state: unknown = start().state;
    for (let v = 1; v <= 300; v++) {
      const op: Op = v === 20 ? { kind: 'set', path: ['dates', 'start'], value: '2026-01-01' } : setTitle(`t${v}`);
      const r = applyOp(tripPlannerSchema, state, op);
      if (!r.ok) throw new Error(r.message);
      state = r.state;
      entries.push({ opId: `o${v}`, by: 'bob', version: v, op, touched: r.touched });
    }
    const ctx: MiniappContext = {
      ...start(),
      state,
      committedState: state,
      version: 300,
      committedVersion: 300,
      checkpointVersion: 300,
      log: new OpLog(entries.slice(-LOG_WINDOW), LOG_WINDOW),
    };
    return { ctx, history: entries.slice(0, 300 - LOG_WINDOW) };
  }

  it('needs history when the base is older than the log', () => {
    const { ctx } = longSession();
    expect(ctx.log.firstVersion(301)).toBe(300 - LOG_WINDOW + 1);
    expect(needsHistory(ctx, req('a1', setTitle('x'), 10))).toBe(true);
    expect(needsHistory(ctx, { type: 'resume', conn: 'a1', since: 10 })).toBe(true);
  });

  it('does not need history when the base is within the log, or for a resend it remembers', () => {
    const { ctx } = longSession();
    const first = ctx.log.firstVersion(301);
    expect(needsHistory(ctx, req('a1', setTitle('x'), first - 1))).toBe(false);
    expect(needsHistory(ctx, req('a1', setTitle('x'), 300))).toBe(false);
    expect(needsHistory(ctx, { ...req('b1', setTitle('x'), 0), by: 'bob', opId: 'o300' })).toBe(false);
    expect(needsHistory(ctx, { type: 'resume', conn: 'a1', since: first - 1 })).toBe(false);
    expect(needsHistory(ctx, { type: 'resume', conn: 'a1', since: 300 })).toBe(false);
  });

  it('checks the op against ops loaded from the store: a clash only in history is a conflict', () => {
    const { ctx, history } = longSession();
    const [, effects] = submit(
      ctx,
      req('a1', { kind: 'set', path: ['dates', 'start'], value: '2026-02-02' }, 10),
      history,
    );
    const frame = sent(effects)[0].frame as Extract<ServerFrame, { type: 'conflict' }>;
    expect(frame.type).toBe('conflict');
    expect(frame.ops.map((o) => o.version)).toEqual(Array.from({ length: 290 }, (_, i) => i + 11));
  });

  it('applies a stale op that no op in history or log touched', () => {
    const { ctx, history } = longSession();
    const [next, effects] = submit(
      ctx,
      req('a1', { kind: 'set', path: ['dates', 'end'], value: '2026-12-31' }, 25),
      history,
    );
    expect(kinds(effects)).toEqual(['persistOp']);
    expect(next.version).toBe(301);
  });

  it('refuses with base_too_old when the ops since the base are no longer kept', () => {
    const { ctx, history } = longSession();
    const [, effects] = submit(
      ctx,
      req('a1', setTitle('x'), 10, 'old'),
      history.filter((e) => e.version > 12),
    );
    expect(sent(effects)[0].frame).toMatchObject({ type: 'error', code: Codes.base_too_old, ref: 'old' });
    const [, none] = submit(ctx, req('a1', setTitle('x'), 10), []);
    expect(sent(none)[0].frame).toMatchObject({ type: 'error', code: Codes.base_too_old });
  });

  it('keeps at most LOG_WINDOW committed ops in memory', () => {
    const { ctx } = longSession();
    const [next] = submit(ctx, req('a1', { kind: 'set', path: ['dates', 'end'], value: '2026-12-31' }, 300));
    // Trimming waits for the commit: until then the log reaches back as far as it did.
    expect(next.log.length).toBe(LOG_WINDOW + 1);
    expect(next.log.toArray()[LOG_WINDOW].version).toBe(301);
    const [committed] = commit(next);
    expect(committed.log.length).toBe(LOG_WINDOW);
    expect(committed.log.toArray()[LOG_WINDOW - 1].version).toBe(301);
  });

  it('never drops ops that are not committed, even past LOG_WINDOW', () => {
    let ctx = start();
    for (let i = 0; i < LOG_WINDOW + 10; i++) [ctx] = submit(ctx, req('a1', setTitle(`t${i}`), ctx.version));
    expect(ctx.log.length).toBe(LOG_WINDOW + 10);
    expect(ctx.log.firstVersion(0)).toBe(1);
    [ctx] = commit(ctx);
    expect(ctx.log.length).toBe(LOG_WINDOW);
    expect(ctx.log.firstVersion(0)).toBe(11);
  });
});

describe('decideCommitted', () => {
  it('publishes the applied frames of newly committed versions in version order and advances committed state', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', setTitle('one'), 0, 'x1'));
    [ctx] = submit(ctx, req('b1', { kind: 'insert', path: ['members'], value: 'cy' }, 1, 'x2'));
    [ctx] = submit(ctx, req('a1', setTitle('three'), 2, 'x3'));
    const [mid, first] = commit(ctx, 2);
    expect(published(first)).toEqual([
      { type: 'applied', opId: 'x1', by: 'ann', version: 1, op: setTitle('one') },
      { type: 'applied', opId: 'x2', by: 'bob', version: 2, op: { kind: 'insert', path: ['members'], value: 'cy' } },
    ]);
    expect(mid.committedVersion).toBe(2);
    expect(mid.committedState).toMatchObject({ title: 'one', members: ['ann', 'bob', 'cy'] });
    const [end, second] = commit(mid, 3);
    expect(published(second).map((f) => (f as { version: number }).version)).toEqual([3]);
    expect(end.committedState).toEqual(end.state);
  });

  it('ignores a committed version it has already seen (commits acknowledged out of order)', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', setTitle('one'), 0));
    [ctx] = submit(ctx, req('a1', setTitle('two'), 1));
    const [after, effects] = commit(ctx, 2);
    expect(published(effects)).toHaveLength(2);
    expect(decideCommitted(after, 1)).toEqual({ context: {}, effects: [] });
    expect(decideCommitted(after, 2)).toEqual({ context: {}, effects: [] });
  });

  it('drops the kept state of committed log entries but keeps their socket', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', setTitle('one'), 0));
    expect(ctx.log.at(1)?.state).toBeDefined();
    [ctx] = commit(ctx);
    expect(ctx.log.at(1)?.state).toBeUndefined();
    expect(ctx.log.at(1)?.conn).toBe('a1');
  });

  it('does not put the log-only fields (touched, conn, state) in the published frames', () => {
    let ctx = start();
    [ctx] = submit(ctx, req('a1', setTitle('one'), 0));
    const [, effects] = commit(ctx);
    expect(Object.keys(published(effects)[0]).sort()).toEqual(['by', 'op', 'opId', 'type', 'version']);
  });
});

describe('decideResume', () => {
  const resume = (since: number) => ({ type: 'resume' as const, conn: 'b1', since });

  it('sends the committed applied frames after since, in order, to the resuming socket only', () => {
    const ctx = applyAll(start(), [
      ['a1', setTitle('one')],
      ['a1', setTitle('two')],
      ['a1', setTitle('three')],
    ]);
    const d = decideResume(ctx, resume(1));
    expect(d.context).toEqual({});
    expect(sent(d.effects).map((s) => [s.conn, s.frame.type, (s.frame as { version: number }).version])).toEqual([
      ['b1', 'applied', 2],
      ['b1', 'applied', 3],
    ]);
    expect(published(d.effects)).toEqual([]);
  });

  it('sends nothing when since is the committed version', () => {
    const ctx = applyAll(start(), [['a1', setTitle('one')]]);
    expect(decideResume(ctx, resume(1)).effects).toEqual([]);
  });

  it('never sends ops that are not committed yet', () => {
    let ctx = applyAll(start(), [['a1', setTitle('one')]]);
    [ctx] = submit(ctx, req('a1', setTitle('two'), 1));
    expect(sent(decideResume(ctx, resume(0)).effects).map((s) => (s.frame as { version: number }).version)).toEqual([
      1,
    ]);
  });

  it('sends a snapshot of the committed state when since is ahead or negative', () => {
    let ctx = applyAll(start(), [['a1', setTitle('one')]]);
    [ctx] = submit(ctx, req('a1', setTitle('uncommitted'), 1));
    for (const since of [5, 2, -1]) {
      const frames = sent(decideResume(ctx, resume(since)).effects).map((s) => s.frame);
      expect(frames).toEqual([snapshotFrame(ctx)]);
      expect(frames[0]).toMatchObject({ type: 'snapshot', version: 1, state: { title: 'one' } });
    }
  });

  it('answers from history when since is older than the log, and with a snapshot when history is gone', () => {
    const entries: LoggedOp[] = [];
    let state: unknown = start().state;
    for (let v = 1; v <= LOG_WINDOW + 4; v++) {
      const r = applyOp(tripPlannerSchema, state, setTitle(`t${v}`));
      if (!r.ok) throw new Error(r.message);
      state = r.state;
      entries.push({ opId: `o${v}`, by: 'bob', version: v, op: setTitle(`t${v}`), touched: ['title'] });
    }
    const ctx: MiniappContext = {
      ...start(),
      state,
      committedState: state,
      version: LOG_WINDOW + 4,
      committedVersion: LOG_WINDOW + 4,
      log: new OpLog(entries.slice(4), LOG_WINDOW),
    };
    const versions = (d: Decision) => sent(d.effects).map((s) => (s.frame as { version: number }).version);
    expect(versions(decideResume(ctx, resume(1), entries.slice(0, 4)))).toEqual(
      Array.from({ length: LOG_WINDOW + 3 }, (_, i) => i + 2),
    );
    expect(sent(decideResume(ctx, resume(1), entries.slice(2, 4)).effects).map((s) => s.frame.type)).toEqual([
      'snapshot',
    ]);
  });
});

describe('snapshots and presence', () => {
  it('lists distinct online users, sorted, a user online while any of their sockets is', () => {
    const conns = new Conns([
      ['c1', 'zoe'],
      ['c2', 'ann'],
      ['c3', 'zoe'],
    ]);
    expect(conns.onlineUsers()).toEqual(['ann', 'zoe']);
    expect(conns.add('c1', 'ann')).toBe(false);
    expect(conns.delete('c1')).toBe(true);
    expect(conns.onlineUsers()).toEqual(['ann', 'zoe']);
    expect(conns.delete('c3')).toBe(true);
    expect(conns.delete('c3')).toBe(false);
    expect(conns.onlineUsers()).toEqual(['ann']);
    expect(conns.size).toBe(1);
    expect(new Conns().onlineUsers()).toEqual([]);
  });

  it('never changes a list of online users it handed out', () => {
    const conns = new Conns([['c1', 'bob']]);
    const before = conns.onlineUsers();
    conns.add('c2', 'ann');
    conns.add('c3', 'bob');
    expect(before).toEqual(['bob']);
    expect(conns.onlineUsers()).toEqual(['ann', 'bob']);
    conns.delete('c2');
    expect(conns.onlineUsers()).toEqual(['bob']);
  });

  it('answers a join with attach, a snapshot and presence; a leave with detach and presence unless none is left', () => {
    const ctx = { ...start(), conns: new Conns() };
    expect(decideJoin(ctx, 'c1', 'bob').effects).toEqual([
      { type: 'attach', params: { conn: 'c1' } },
      { type: 'send', params: { conn: 'c1', frame: snapshotFrame(ctx) } },
      { type: 'publish', params: { frame: { type: 'presence', online: ['bob'] } } },
    ]);
    expect(decideJoin(ctx, 'c2', 'ann').effects[2]).toEqual({
      type: 'publish',
      params: { frame: { type: 'presence', online: ['ann', 'bob'] } },
    });
    expect(decideLeave(ctx, 'c2').effects).toEqual([
      { type: 'detach', params: { conn: 'c2' } },
      { type: 'publish', params: { frame: { type: 'presence', online: ['bob'] } } },
    ]);
    expect(decideLeave(ctx, 'c2').effects).toEqual([]);
    expect(decideLeave(ctx, 'c1').effects).toEqual([{ type: 'detach', params: { conn: 'c1' } }]);
    expect(ctx.conns.size).toBe(0);
  });

  it('attaches rejoining sockets without a snapshot, skipping those already there', () => {
    const ctx = { ...start(), conns: new Conns([['c1', 'bob']]) };
    expect(
      decideRejoin(ctx, [
        { conn: 'c1', user: 'bob' },
        { conn: 'c2', user: 'ann' },
      ]).effects,
    ).toEqual([
      { type: 'attach', params: { conn: 'c2' } },
      { type: 'publish', params: { frame: { type: 'presence', online: ['ann', 'bob'] } } },
    ]);
    expect(decideRejoin(ctx, [{ conn: 'c2', user: 'ann' }]).effects).toEqual([]);
  });

  it('shows the committed state and version, never the head', () => {
    let ctx = applyAll(start(), [['a1', setTitle('committed')]]);
    [ctx] = submit(ctx, req('a1', setTitle('head'), 1));
    expect(snapshotFrame(ctx)).toEqual({
      type: 'snapshot',
      version: 1,
      state: ctx.committedState,
      participants: ['ann', 'bob'],
      online: ['ann', 'bob'],
    });
    expect((ctx.committedState as Trip).title).toBe('committed');
  });
});

describe('stale ops', () => {
  it(`refuses an op more than MAX_STALE_VERSIONS behind with base_too_old, without asking for history`, async () => {
    const { MAX_STALE_VERSIONS, needsHistory, decideOp } = await import('../../actors/miniappSession.ts');
    const { OpLog } = await import('../../actors/OpLog.ts');
    const { Codes } = await import('../../src/errors.ts');
    const { tripPlanner } = await import('../../actors/apps/tripPlanner.ts');
    const version = MAX_STALE_VERSIONS + 10;
    const state = tripPlanner.initialState({});
    const ctx = {
      sessionId: 's',
      app: 'trip-planner',
      state,
      version,
      committedState: state,
      committedVersion: version,
      checkpointVersion: version,
      participants: [],
      log: new OpLog([], 256),
      conns: new Conns(),
      held: [],
      deferred: null,
    };
    const req = {
      type: 'op' as const,
      conn: 'c',
      by: 'u',
      opId: 'x',
      baseVersion: 5,
      op: { kind: 'set' as const, path: ['title'], value: 'T' },
      receivedAt: 0,
    };
    expect(needsHistory(ctx, req)).toBe(false);
    const d = decideOp(ctx, req);
    expect(d.effects[0]).toMatchObject({
      type: 'send',
      params: { frame: { type: 'error', code: Codes.base_too_old, ref: 'x' } },
    });
  });
});
