import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sameSocketBefore } from '../../actors/miniappSession.ts';
import { type LoggedOp, OpLog } from '../../actors/OpLog.ts';
import { overlaps, type Path } from '../../actors/ops.ts';
import { PathIndex } from '../../actors/PathIndex.ts';

// Few distinct names, so paths often share prefixes, and ids beside indexes in one array.
const segmentArb = fc.oneof(
  fc.constantFrom('budget', 'items', 'label'),
  fc.integer({ min: 0, max: 2 }),
  fc.constantFrom('a', 'b', 'c').map((id) => ({ id })),
);
const pathArb = fc.array(segmentArb, { maxLength: 4 });
const connArb = fc.constantFrom(undefined, 'c1', 'c2', 'c3');
const seqArb = fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined });
const touchArb = fc.record({ touched: pathArb, conn: connArb, seq: seqArb });

/** What the session checked before the index: every op after the base, one by one. */
function scanClashes(
  ops: { touched: Path; version: number; conn?: string; seq?: number }[],
  claimed: Path,
  base: number,
  conn: string,
  seq?: number,
) {
  return ops.some((e) => e.version > base && !sameSocketBefore(e, { conn, seq }) && overlaps(e.touched, claimed));
}

describe('PathIndex', () => {
  it('never calls clear what a scan of the ops since the base finds clashing (any ops, prunes, queries)', () => {
    fc.assert(
      fc.property(
        fc.array(touchArb, { minLength: 1, maxLength: 40 }),
        fc.nat(),
        fc.integer({ min: 1, max: 5 }),
        fc.array(
          fc.record({ claimed: pathArb, base: fc.nat(), conn: fc.constantFrom('c1', 'c2', 'c3'), seq: seqArb }),
          {
            minLength: 1,
            maxLength: 10,
          },
        ),
        (touches, forgetRaw, pruneEvery, queries) => {
          const ops = touches.map((t, i) => ({ ...t, version: i + 1 }));
          const index = new PathIndex();
          for (const e of ops) index.add(e.touched, e.version, e.conn, e.seq);
          // The log forgets its oldest ops first, and the index their paths now and then; a
          // query's base is never before what the log holds.
          const forgotten = forgetRaw % ops.length;
          for (let v = pruneEvery; v <= forgotten; v += pruneEvery) index.prune(v + 1);
          index.prune(forgotten + 1);
          const held = ops.slice(forgotten);
          // Also every held op's own path, from the oldest base the log can be asked about.
          const asked = [
            ...queries.map((q) => ({ ...q, base: forgotten + (q.base % (ops.length - forgotten + 1)) })),
            ...held.map((e) => ({ claimed: e.touched, base: forgotten, conn: 'c1', seq: 0 })),
          ];
          for (const { base, ...q } of asked) {
            if (scanClashes(held, q.claimed, base, q.conn, q.seq)) {
              expect(index.clear(q.claimed, base, q.conn, q.seq), JSON.stringify({ q, base, held })).toBe(false);
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('clears a socket’s edits over its own earlier ones and over other sockets’ elsewhere', () => {
    const index = new PathIndex();
    const label = (id: string): Path => ['budget', 'items', { id }, 'label'];
    index.add(['budget', 'items', { id: 'a' }], 1, 'c0', 0); // the item's insert, long before
    for (let v = 2; v < 200; v++) index.add(label(v % 2 ? 'a' : 'b'), v, v % 2 ? 'c1' : 'c2', v);
    // c1 edits its own item over a stale base: only its own ops and c2's on another item since.
    expect(index.clear(label('a'), 10, 'c1', 500)).toBe(true);
    // c2 edits c1's item: c1's ops since the base clash.
    expect(index.clear(label('a'), 10, 'c2', 500)).toBe(false);
    // An index may name the item with that id; the list itself holds every item's edits.
    expect(index.clear(['budget', 'items', 0, 'label'], 10, 'c3', 0)).toBe(false);
    expect(index.clear(['budget', 'items'], 10, 'c3', 0)).toBe(false);
    expect(index.clear(['budget', 'total'], 10, 'c3', 0)).toBe(true);
    // Based on the newest version, nothing since clashes.
    expect(index.clear(label('a'), 199, 'c2', 0)).toBe(true);
    // An op of the same socket sent after this one (applied first) clashes.
    expect(index.clear(label('a'), 10, 'c1', 150)).toBe(false);
  });

  it('drops the paths only older ops touched, so it holds no more paths than its ops name', () => {
    const index = new PathIndex();
    for (let v = 1; v <= 1000; v++) index.add(['days', { id: `d${v}` }, 'items', v % 3], v, 'c1', v);
    // Keep the last 10, as a log with a window of 10 would.
    index.prune(991);
    // root, 'days', and ten days of three nodes each.
    expect(index.size).toBe(2 + 10 * 3);
    expect(index.clear(['days', { id: 'd995' }], 990, 'c2', 0)).toBe(false);
    index.prune(1001);
    expect(index.size).toBe(1);
  });
});

describe('OpLog.clearOf', () => {
  const entry = (version: number, touched: Path, conn: string): LoggedOp => ({
    opId: `o${version}`,
    by: conn,
    version,
    op: { kind: 'set', path: touched, value: version },
    touched,
    conn,
  });

  it('answers from its index, and not for ops prepended from the store (older than what it indexed)', () => {
    const log = new OpLog([entry(5, ['title'], 'c1'), entry(6, ['notes'], 'c2')], 10);
    expect(log.clearOf(['title'], 5, 'c2', 0)).toBe(true);
    expect(log.clearOf(['title'], 4, 'c2', 0)).toBe(false);
    log.prepend([entry(3, ['notes'], 'c1'), entry(4, ['notes'], 'c1')], 100);
    // Versions 3 and 4 are held but not indexed: a base before them cannot be answered here.
    expect(log.clearOf(['title'], 2, 'c2', 0)).toBe(false);
    expect(log.clearOf(['budget'], 2, 'c2', 0)).toBe(false);
    expect(log.clearOf(['budget'], 4, 'c2', 0)).toBe(true);
  });

  it('never calls clear what a scan of its held entries finds clashing, across appends and trims', () => {
    fc.assert(
      fc.property(
        fc.array(touchArb, { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.record({ claimed: pathArb, conn: fc.constantFrom('c1', 'c2', 'c3'), seq: seqArb }), {
          minLength: 1,
          maxLength: 5,
        }),
        (touches, window, queries) => {
          const log = new OpLog([], window);
          touches.forEach((t, i) => {
            log.append({ ...entry(i + 1, t.touched, t.conn ?? 'c0'), conn: t.conn, seq: t.seq });
            log.trim(i + 1);
            const held = log.toArray();
            // Every base the log can answer for: from just before its first entry.
            for (let base = held[0].version - 1; base <= i + 1; base++) {
              for (const q of [...queries, ...held.map((e) => ({ claimed: e.touched, conn: 'c1', seq: 0 }))]) {
                if (scanClashes(held, q.claimed, base, q.conn, q.seq)) {
                  expect(log.clearOf(q.claimed, base, q.conn, q.seq)).toBe(false);
                }
              }
            }
          });
        },
      ),
      { numRuns: 200 },
    );
  });

  it('drops the paths of trimmed entries once per window, so it never holds more than two windows of them', () => {
    const log = new OpLog([], 4);
    for (let v = 1; v <= 50; v++) {
      log.append(entry(v, ['days', { id: `d${v}` }, 'title'], 'c1'));
      log.trim(v);
      // root and 'days', then two nodes per day the index still holds.
      expect(log.pathNodes).toBeLessThanOrEqual(2 + 2 * 2 * 4);
    }
    expect(log.length).toBe(4);
  });
});
