import v8 from 'node:v8';
import vm from 'node:vm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type LoggedOp, OpLog } from '../../actors/OpLog.ts';

const entry = (version: number, by = 'ann', opId = `o${version}`): LoggedOp => ({
  opId,
  by,
  version,
  op: { kind: 'set', path: ['title'], value: `t${version}` },
  touched: ['title'],
});

const versions = (entries: LoggedOp[]) => entries.map((e) => e.version);

describe('OpLog', () => {
  it('holds the entries it is built with, without sharing the caller’s array', () => {
    const given = [entry(4), entry(5)];
    const log = new OpLog(given, 10);
    given.push(entry(6));
    expect(log.length).toBe(2);
    expect(versions(log.toArray())).toEqual([4, 5]);
  });

  it('reports the first version held, or the given next version when empty', () => {
    expect(new OpLog([], 10).firstVersion(7)).toBe(7);
    expect(new OpLog([entry(3), entry(4)], 10).firstVersion(7)).toBe(3);
  });

  it('finds entries by version and by (user, opId)', () => {
    const log = new OpLog([entry(1), entry(2, 'bob', 'x')], 10);
    expect(log.at(2)?.opId).toBe('x');
    expect(log.at(3)).toBeUndefined();
    expect(log.find('bob', 'x')?.version).toBe(2);
    expect(log.find('ann', 'x')).toBeUndefined();
  });

  it('lists the entries after a version, ascending', () => {
    const log = new OpLog([entry(3), entry(4), entry(5)], 10);
    expect(versions(log.after(0))).toEqual([3, 4, 5]);
    expect(versions(log.after(3))).toEqual([4, 5]);
    expect(versions(log.after(5))).toEqual([]);
    expect(new OpLog([], 10).after(0)).toEqual([]);
  });

  it('appends entries, keeping lookups in step', () => {
    const log = new OpLog([entry(1)], 10);
    const appended = entry(2, 'bob', 'y');
    log.append(appended);
    expect(log.at(2)).toBe(appended);
    expect(log.find('bob', 'y')).toBe(appended);
    expect(log.length).toBe(2);
  });

  it('trims committed entries beyond its window, oldest first, and forgets their opIds', () => {
    const log = new OpLog([entry(1), entry(2), entry(3), entry(4)], 2);
    log.trim(4);
    expect(versions(log.toArray())).toEqual([3, 4]);
    expect(log.firstVersion(0)).toBe(3);
    expect(log.find('ann', 'o1')).toBeUndefined();
    expect(log.find('ann', 'o3')?.version).toBe(3);
  });

  it('never trims entries that are not committed', () => {
    const log = new OpLog([entry(1), entry(2), entry(3), entry(4)], 2);
    log.trim(1);
    expect(versions(log.toArray())).toEqual([2, 3, 4]);
    log.trim(0);
    expect(log.length).toBe(3);
  });

  it('keeps working across many appends and trims (its backing array is compacted)', () => {
    const log = new OpLog([], 3);
    for (let v = 1; v <= 5000; v++) {
      log.append(entry(v));
      log.trim(v);
    }
    expect(versions(log.toArray())).toEqual([4998, 4999, 5000]);
    expect(log.at(4999)?.version).toBe(4999);
    expect(versions(log.after(4998))).toEqual([4999, 5000]);
    expect(log.find('ann', 'o4997')).toBeUndefined();
    expect(log.find('ann', 'o5000')?.version).toBe(5000);
  });

  it('keeps no trimmed entry alive (a session’s memory is its window, not its backing array)', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const log = new OpLog([], 3);
    const refs: WeakRef<LoggedOp>[] = [];
    for (let v = 1; v <= 50; v++) {
      const e = entry(v);
      refs.push(new WeakRef(e));
      log.append(e);
      log.trim(v);
    }
    // Weak references are cleared only after the job that made them.
    await new Promise((resolve) => setTimeout(resolve, 0));
    gc();
    const alive = refs.filter((r) => r.deref() !== undefined).map((r) => (r.deref() as LoggedOp).version);
    expect(alive).toEqual([48, 49, 50]);
  });

  // Documents a latent bug: `at` reads below `head`, returning entries that were trimmed.
  it('has no entry for a version it no longer holds', () => {
    const log = new OpLog([entry(1), entry(2), entry(3)], 2);
    log.trim(3);
    expect(log.firstVersion(0)).toBe(2);
    expect(log.at(1)).toBeUndefined();
  });
});

describe('OpLog.prepend', () => {
  const op = (version: number) => ({
    version,
    opId: `o${version}`,
    by: 'u',
    op: { kind: 'remove' as const, path: ['x'] },
    touched: ['x'],
  });
  it('puts a gap-free run of older ops in front and keeps them within the larger window', () => {
    const log = new OpLog([op(10), op(11)], 2);
    log.prepend([op(5), op(7), op(8), op(9)], 5);
    expect(log.toArray().map((e) => e.version)).toEqual([7, 8, 9, 10, 11]);
    expect(log.find('u', 'o8')?.version).toBe(8);
    log.trim(11);
    expect(log.length).toBe(5);
    log.append(op(12));
    log.trim(12);
    expect(log.toArray().map((e) => e.version)).toEqual([8, 9, 10, 11, 12]);
  });

  it('finds each user’s op when two users chose the same opId, before and after either is trimmed', () => {
    const log = new OpLog([entry(1, 'ann', 'same'), entry(2, 'bob', 'same'), entry(3, 'cy', 'same')], 2);
    expect(log.find('ann', 'same')?.version).toBe(1);
    expect(log.find('bob', 'same')?.version).toBe(2);
    expect(log.find('cy', 'same')?.version).toBe(3);
    expect(log.find('dee', 'same')).toBeUndefined();
    log.trim(3);
    expect(log.find('ann', 'same')).toBeUndefined();
    expect(log.find('bob', 'same')?.version).toBe(2);
    log.append(entry(4, 'ann', 'same'));
    log.trim(4);
    expect(log.find('bob', 'same')).toBeUndefined();
    expect(log.find('cy', 'same')?.version).toBe(3);
    expect(log.find('ann', 'same')?.version).toBe(4);
  });

  it('finds by (user, opId) exactly the held entries, across appends, trims and prepends (property)', () => {
    const step = fc.oneof(
      fc.record({
        t: fc.constant('append' as const),
        // A user id may hold U+0000 (an opId may not): 'a\u0000b' and 'a' never share a key.
        by: fc.constantFrom('ann', 'bob', 'a', 'a\u0000b'),
        opId: fc.constantFrom('x', 'y', 'b'),
      }),
      fc.record({ t: fc.constant('trim' as const) }),
      fc.record({ t: fc.constant('prepend' as const), n: fc.integer({ min: 1, max: 4 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.array(step, { maxLength: 60 }), (window, steps) => {
        // Every op ever made, by version: what the store would hold.
        const made: LoggedOp[] = [];
        const log = new OpLog([], window);
        for (const s of steps) {
          if (s.t === 'append') {
            // A (user, opId) the log still holds is a resend: not appended again.
            if (log.find(s.by, s.opId)) continue;
            const e = entry(made.length + 1, s.by, s.opId);
            made.push(e);
            log.append(e);
          } else if (s.t === 'trim') log.trim(made.length);
          else {
            const first = log.firstVersion(made.length + 1);
            log.prepend(made.slice(Math.max(0, first - 1 - s.n), first - 1), window + 4);
          }
          const held = log.toArray();
          for (const by of ['ann', 'bob', 'a', 'a\u0000b', 'cy']) {
            for (const opId of ['x', 'y', 'b']) {
              const expected = held.filter((e) => e.by === by && e.opId === opId);
              expect(log.find(by, opId)).toBe(expected.at(-1));
            }
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
