/**
 * The client SDK's edit bookkeeping (`src/client/PendingEdits.ts`, `AppliedHistory.ts`):
 * what happens to pending edits after a reconnect, conflict frames, transient refusals, and
 * the applied-op window they are checked against. Pure, so tested without a socket.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { tripPlanner } from '../../actors/apps/tripPlanner.ts';
import type { AppliedOp } from '../../actors/miniappFrames.ts';
import { claimedPath, type Op, overlaps } from '../../actors/ops.ts';
import { AppliedHistory } from '../../src/client/AppliedHistory.ts';
import {
  applyPending,
  clashingOps,
  type PendingEdit,
  PendingEdits,
  rebasePending,
} from '../../src/client/PendingEdits.ts';
import { trip } from './tripPlannerArbitraries.ts';

const schema = tripPlanner.schema;

const setTitle = (value: string): Op => ({ kind: 'set', path: ['title'], value });
const setStart = (value: string): Op => ({ kind: 'set', path: ['dates', 'start'], value });
const setCurrency = (value: string): Op => ({ kind: 'set', path: ['budget', 'currency'], value });

const edit = (opId: string, op: Op, baseVersion: number): PendingEdit => ({ opId, op, baseVersion });
const applied = (version: number, op: Op, opId = `theirs${version}`, by = 'bob'): AppliedOp => ({
  opId,
  by,
  version,
  op,
});

/**
 * Bookkeeping at `version` holding `edits`, as after a snapshot at the version before, one
 * applied op, and a few local edits.
 */
function ledgerAt(version: number, ...edits: PendingEdit[]): PendingEdits {
  const ledger = new PendingEdits(schema);
  ledger.snapshot(version - 1);
  ledger.landed(applied(version, setCurrency('USD'), 'seen'));
  for (const e of edits) ledger.add(e);
  return ledger;
}

/** Reconnects at `version` after being at `previous`, feeding the resume's history. */
function resume(ledger: PendingEdits, previous: number, version: number, history: AppliedOp[]): boolean[] {
  ledger.snapshot(version);
  expect(ledger.startResume(previous, version)).toBe(true);
  return history.map((op) => ledger.historyOp(op));
}

describe('PendingEdits after a reconnect', () => {
  it('drops the edits that landed meanwhile and rebases the others onto the current version', () => {
    const title = edit('mine-1', setTitle('Porto'), 5);
    const start = edit('mine-2', setStart('2027-05-01'), 5);
    const ledger = ledgerAt(5, title, start);
    const done = resume(ledger, 5, 7, [applied(6, title.op, title.opId, 'ann'), applied(7, setCurrency('EUR'))]);
    expect(done).toEqual([false, true]);
    expect(ledger.resuming).toBe(false);
    expect(ledger.rebase(7)).toEqual([]);
    expect(ledger.edits).toEqual([{ ...start, baseVersion: 7 }]);
  });

  it('reports an edit whose field someone else changed as a conflict naming only that op', () => {
    const first = edit('mine-1', setTitle('Porto'), 5);
    const second = edit('mine-2', setTitle('Porto in May'), 5);
    const ledger = ledgerAt(5, first, second);
    const theirs = applied(7, setTitle('Lisbon!'));
    resume(ledger, 5, 8, [applied(6, first.op, first.opId, 'ann'), theirs, applied(8, setCurrency('EUR'))]);
    // The client's own earlier title edit never clashes with its later one.
    expect(ledger.rebase(8)).toEqual([{ edit: second, ops: [theirs] }]);
    expect(ledger.edits).toEqual([]);
  });

  it('keeps an edit based before the kept history as it is, for the server to judge', () => {
    const ledger = ledgerAt(10, edit('old', setTitle('Porto'), 4));
    resume(ledger, 10, 11, [applied(11, setTitle('Lisbon!'))]);
    expect(ledger.rebase(11)).toEqual([]);
    expect(ledger.edits).toEqual([edit('old', setTitle('Porto'), 4)]);
  });

  it('leaves the edits to the server when it saw no op before the drop (the snapshot starts the window)', () => {
    const pending = edit('mine', setTitle('Porto'), 5);
    const ledger = new PendingEdits(schema);
    ledger.snapshot(5);
    ledger.add(pending);
    expect(resume(ledger, 5, 7, [applied(6, pending.op, pending.opId), applied(7, setTitle('Lisbon!'))])).toEqual([
      false,
      true,
    ]);
    expect(ledger.rebase(7)).toEqual([]);
    expect(ledger.edits).toEqual([pending]);
  });

  it('keeps every edit as it is when the history does not reach the current version', () => {
    const pending = edit('mine', setTitle('Porto'), 5);
    const ledger = ledgerAt(5, pending);
    expect(ledger.startResume(5, 5)).toBe(false);
    expect(ledger.rebase(9)).toEqual([]);
    expect(ledger.edits).toEqual([pending]);
  });

  it('asks for no resume before the first snapshot, with nothing pending, or when nothing happened', () => {
    expect(ledgerAt(3, edit('a', setTitle('x'), 3)).startResume(-1, 4)).toBe(false);
    expect(ledgerAt(3).startResume(3, 4)).toBe(false);
    expect(ledgerAt(3, edit('a', setTitle('x'), 3)).startResume(4, 4)).toBe(false);
  });

  it('ignores history at or before the resume point, and any once the socket closed', () => {
    const ledger = ledgerAt(5, edit('mine', setTitle('Porto'), 5));
    ledger.startResume(5, 7);
    expect(ledger.historyOp(applied(5, setCurrency('EUR')))).toBe(false);
    ledger.socketClosed();
    expect(ledger.resuming).toBe(false);
    expect(ledger.historyOp(applied(7, setCurrency('EUR')))).toBe(false);
  });

  it('returns every pending edit as an unconfirmed conflict when the resume got a snapshot instead', () => {
    const a = edit('a', setTitle('Porto'), 5);
    const b = edit('b', setStart('2027-05-01'), 5);
    const ledger = ledgerAt(5, a, b);
    ledger.startResume(5, 9);
    expect(ledger.lose()).toEqual([
      { edit: a, ops: [], unconfirmed: true },
      { edit: b, ops: [], unconfirmed: true },
    ]);
    expect(ledger.edits).toEqual([]);
    expect(ledger.resuming).toBe(false);
  });
});

describe('PendingEdits answers', () => {
  it("keeps only others' ops on the edit's field after its base from a conflict frame", () => {
    const mine = edit('mine-1', setTitle('Porto'), 2);
    const earlier = edit('mine-0', setTitle('Po'), 1);
    const ledger = ledgerAt(2, earlier, mine);
    const ops = [
      applied(2, setTitle('before the base')),
      applied(3, earlier.op, earlier.opId, 'ann'),
      applied(4, setCurrency('EUR')),
      applied(5, setTitle('Lisbon!')),
    ];
    expect(ledger.conflict(mine.opId, ops, 5)).toEqual({ edit: mine, ops: [ops[3]] });
    expect(ledger.edits).toEqual([earlier]);
    expect(ledger.conflict('unknown', ops, 5)).toBeUndefined();
  });

  it('sends again, on top of them, an edit that clashed only with its own earlier edits (a few times at most)', () => {
    const earlier = edit('mine-0', setTitle('Po'), 1);
    const mine = edit('mine-1', setTitle('Porto'), 1);
    const ledger = ledgerAt(1, earlier, mine);
    // `mine-0` was sent on an earlier connection and landed after `mine-1` was sent.
    const ops = [applied(2, earlier.op, earlier.opId, 'ann')];
    ledger.landed(ops[0]);
    const answer = ledger.conflict(mine.opId, ops, 2);
    expect(answer).toEqual({ retry: { ...mine, baseVersion: 2 } });
    expect(ledger.edits).toEqual([{ ...mine, baseVersion: 2 }]);
    let last = answer;
    for (let i = 0; i < 10 && last && 'retry' in last; i++) last = ledger.conflict(mine.opId, ops, 2);
    expect(last).toEqual({ edit: { ...mine, baseVersion: 2 }, ops: [] });
    expect(ledger.edits).toEqual([]);
  });

  it('takes an old applied op that answers a pending edit (sent again after it landed) as its answer', () => {
    const a = edit('a', setTitle('Porto'), 5);
    const ledger = ledgerAt(7, a);
    expect(ledger.answeredAgain(applied(6, a.op, a.opId))).toBe(true);
    expect(ledger.edits).toEqual([]);
    expect(ledger.answeredAgain(applied(6, a.op, a.opId))).toBe(false);
  });

  it('removes an edit that landed, and leaves the others', () => {
    const a = edit('a', setTitle('Porto'), 5);
    const b = edit('b', setStart('2027-05-01'), 5);
    const ledger = ledgerAt(5, a, b);
    ledger.landed(applied(6, a.op, a.opId));
    ledger.landed(applied(7, setCurrency('EUR')));
    expect(ledger.edits).toEqual([b]);
  });

  it('retries an edit refused only for now with a doubling delay, then reports it refused', () => {
    const a = edit('a', setTitle('Porto'), 5);
    const ledger = ledgerAt(5, a);
    const delays = Array.from({ length: 5 }, () => ledger.refused('a', 'rate_limited'));
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000].map((delayMs) => ({ retry: a, delayMs })));
    expect(ledger.has(a)).toBe(true);
    expect(ledger.refused('a', 'db_unavailable')).toEqual({ edit: a });
    expect(ledger.has(a)).toBe(false);
  });

  it('reports an edit refused for good at once, and an error about no pending edit without one', () => {
    const a = edit('a', setTitle('Porto'), 5);
    const ledger = ledgerAt(5, a);
    expect(ledger.refused(undefined, 'rate_limited')).toEqual({});
    expect(ledger.refused('other', 'validation_failed')).toEqual({});
    expect(ledger.refused('a', 'validation_failed')).toEqual({ edit: a });
    expect(ledger.edits).toEqual([]);
  });

  it('builds the view from the confirmed state and the pending edits that still apply', () => {
    const confirmed = trip();
    const view = applyPending(schema, confirmed, [
      edit('a', setTitle('Porto'), 0),
      edit('b', { kind: 'remove', path: ['days', { id: 'missing' }] }, 0),
      edit('c', setCurrency('EUR'), 0),
    ]);
    expect(view).toMatchObject({ title: 'Porto', budget: { currency: 'EUR' } });
    expect(confirmed.title).toBe('Lisbon');
    expect(applyPending(undefined, confirmed, [edit('a', setTitle('Porto'), 0)])).toBe(confirmed);
  });
});

describe('AppliedHistory', () => {
  it('starts after the snapshot and keeps the window of a resume that continues it', () => {
    const history = new AppliedHistory(10);
    history.startAt(4);
    history.add(applied(5, setTitle('a')));
    history.startAt(9);
    expect(history.from).toBe(4);
    history.add(applied(6, setTitle('b')));
    expect(history.ops.map((o) => o.version)).toEqual([5, 6]);
    expect(history.last).toBe(6);
  });

  it('starts again at an op that does not follow on, and keeps only the newest `limit` ops', () => {
    const history = new AppliedHistory(2);
    history.startAt(0);
    for (const v of [1, 2, 3]) history.add(applied(v, setTitle(`t${v}`)));
    expect(history.ops.map((o) => o.version)).toEqual([2, 3]);
    expect(history.from).toBe(1);
    history.add(applied(7, setTitle('t7')));
    expect(history.ops.map((o) => o.version)).toEqual([7]);
    expect(history.from).toBe(6);
  });

  it('never has a gap, whatever versions arrive', () => {
    const step = fc.oneof(
      fc.record({ snapshot: fc.integer({ min: 0, max: 40 }) }),
      fc.record({ add: fc.integer({ min: 0, max: 40 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.array(step, { maxLength: 60 }), (limit, steps) => {
        const history = new AppliedHistory(limit);
        for (const s of steps) {
          const lastBefore = history.last;
          if ('snapshot' in s) history.startAt(s.snapshot);
          else history.add(applied(s.add, setTitle('t')));
          const versions = history.ops.map((o) => o.version);
          expect(versions).toEqual(versions.map((_, i) => history.from + 1 + i));
          expect(versions.length).toBeLessThanOrEqual(limit);
          if ('add' in s && s.add > lastBefore) expect(history.last).toBe(s.add);
          if ('add' in s && s.add <= lastBefore) expect(history.last).toBe(lastBefore);
        }
      }),
    );
  });
});

describe('rebasePending', () => {
  /** Ops on fields that overlap in every way: a field, its parent, a sibling, an array and its item. */
  const opArb = fc.constantFrom<Op>(
    setTitle('Porto'),
    setStart('2027-05-01'),
    { kind: 'set', path: ['dates', 'end'], value: '2027-05-09' },
    { kind: 'set', path: ['dates'], value: null },
    setCurrency('EUR'),
    { kind: 'insert', path: ['members'], value: 'ann' },
    { kind: 'set', path: ['members', 0], value: 'bob' },
  );
  const ids = ['a', 'b', 'c', 'd', 'e', 'f'];

  const caseArb = fc
    .record({
      from: fc.integer({ min: 0, max: 5 }),
      historyOps: fc.array(fc.record({ op: opArb, id: fc.constantFrom(...ids, 'x', 'y', 'z') }), { maxLength: 8 }),
      pending: fc.uniqueArray(fc.record({ op: opArb, id: fc.constantFrom(...ids), base: fc.nat(14) }), {
        selector: (p) => p.id,
        maxLength: 6,
      }),
      sent: fc.subarray([...ids, 'x']),
      reachesVersion: fc.boolean(),
    })
    .map(({ from, historyOps, pending, sent, reachesVersion }) => {
      const history = new AppliedHistory(100);
      history.startAt(from);
      historyOps.forEach((h, i) => {
        history.add(applied(from + 1 + i, h.op, h.id));
      });
      const version = history.last + (reachesVersion ? 0 : 1);
      const edits = pending.map((p) => edit(p.id, p.op, Math.min(p.base, version)));
      return { history, version, edits, sent: new Set([...sent, ...pending.map((p) => p.id)]) };
    });

  it('drops, keeps or reports each pending edit exactly once, keeping their order', () => {
    fc.assert(
      fc.property(caseArb, ({ history, version, edits, sent }) => {
        const { kept, conflicts } = rebasePending(schema, edits, history, version, sent);
        const landed = new Set(history.ops.map((h) => h.opId));
        const expected = edits.filter((e) => !landed.has(e.opId)).map((e) => e.opId);
        const keptIds = kept.map((e) => e.opId);
        const conflictIds = conflicts.map((c) => c.edit.opId);
        expect([...keptIds, ...conflictIds].sort()).toEqual([...expected].sort());
        expect(keptIds).toEqual(expected.filter((id) => keptIds.includes(id)));
      }),
    );
  });

  it("reports only others' ops after the edit's base on its fields, and rebases only edits none touched", () => {
    fc.assert(
      fc.property(caseArb, ({ history, version, edits, sent }) => {
        const { kept, conflicts } = rebasePending(schema, edits, history, version, sent);
        for (const { edit: e, ops } of conflicts) {
          expect(ops.length).toBeGreaterThan(0);
          for (const op of ops) {
            expect(op.version).toBeGreaterThan(e.baseVersion);
            expect(sent.has(op.opId)).toBe(false);
            expect(overlaps(claimedPath(schema, op.op), claimedPath(schema, e.op))).toBe(true);
          }
        }
        for (const k of kept) {
          const original = edits.find((e) => e.opId === k.opId) as PendingEdit;
          if (k.baseVersion === original.baseVersion) continue;
          // Moved onto the current version: only when the history vouches for everything since its base.
          expect(k.baseVersion).toBe(version);
          expect(history.last).toBe(version);
          expect(original.baseVersion).toBeGreaterThanOrEqual(history.from);
          expect(clashingOps(schema, original, history.ops, sent)).toEqual([]);
        }
      }),
    );
  });

  it('decides nothing about edits the history cannot vouch for: they keep their base', () => {
    fc.assert(
      fc.property(caseArb, ({ history, version, edits, sent }) => {
        const { kept } = rebasePending(schema, edits, history, version, sent);
        const landed = new Set(history.ops.map((h) => h.opId));
        const unvouched = edits.filter(
          (e) => !landed.has(e.opId) && (history.last !== version || e.baseVersion < history.from),
        );
        for (const e of unvouched) expect(kept).toContainEqual(e);
      }),
    );
  });
});
