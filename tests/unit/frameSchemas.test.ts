/**
 * The op frame's parser (`src/miniapp/frameSchemas.ts`): its fast path must answer exactly what
 * zod's schema answers, or leave the frame to zod. Whatever a client sends — valid, nearly
 * valid, or hostile — `parseOpFrame` and `opFrameSchema.safeParse` agree: the same data (field
 * for field, in the same order, as it is stored and broadcast) or the same error.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { opFrameSchema, parseOpFrame } from '../../src/miniapp/frameSchemas.ts';

/** Strings around the limits: empty, at and past 64 and 200 code units, with U+0000 or a lone surrogate. */
const edgyString = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.constantFrom('', 'a', 'x'.repeat(64), 'x'.repeat(65), 'x'.repeat(200), 'x'.repeat(201), 'a\0b', 'a\uD800b', '😀'),
);
const edgyNumber = fc.oneof(
  fc.integer({ min: -3, max: 1_000_003 }),
  fc.constantFrom(0, -0, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 2 ** 53 + 2, 1_000_000, 1_000_001),
);
const segment = fc.oneof(
  edgyString,
  edgyNumber,
  fc.record({ id: edgyString }),
  fc.record({ id: edgyString, extra: fc.constant(1) }),
  fc.record({ id: edgyNumber }),
  fc.constant(null),
  fc.constant([]),
);
const path = fc.oneof(
  fc.array(segment, { maxLength: 4 }),
  fc.array(segment, { minLength: 31, maxLength: 34 }),
  fc.constant('a'),
);
const json = fc.jsonValue({ maxDepth: 2 });
/** An op of each kind with its fields present, missing or wrong, and now and then one too many. */
const op = fc
  .record(
    {
      kind: fc.constantFrom('set', 'insert', 'remove', 'move', 1),
      path,
      value: json,
      index: fc.oneof(edgyNumber, edgyString),
      extra: json,
    },
    { requiredKeys: [] },
  )
  .chain((o) =>
    fc.shuffledSubarray(Object.keys(o)).map((keys) => Object.fromEntries(keys.map((k) => [k, o[k as keyof typeof o]]))),
  );
const frame = fc.record(
  {
    type: fc.constantFrom('op', 'resume', 'op'),
    opId: fc.oneof(edgyString, edgyNumber),
    baseVersion: fc.oneof(edgyNumber, edgyString),
    op: fc.oneof(op, op, op, json),
    other: json,
  },
  { requiredKeys: [] },
);

/** As a client's frame arrives: parsed from its JSON text (no undefined, no prototypes but Object's). */
const arriving = (f: unknown) => JSON.parse(JSON.stringify(f));

/** A valid op frame of the shapes clients send. */
const validFrame = fc
  .record({
    opId: fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !s.includes('\0')),
    baseVersion: fc.nat(),
    kind: fc.constantFrom('set', 'insert', 'insertAt', 'remove'),
    path: fc.array(
      fc.oneof(
        fc.string({ minLength: 1, maxLength: 10 }),
        fc.nat({ max: 1_000_000 }),
        fc.record({ id: fc.string({ minLength: 1, maxLength: 10 }) }),
      ),
      { minLength: 1, maxLength: 6 },
    ),
    value: json,
    index: fc.nat(),
  })
  .map(({ opId, baseVersion, kind, path, value, index }) => ({
    type: 'op',
    opId,
    baseVersion,
    op:
      kind === 'remove'
        ? { kind, path }
        : kind === 'insertAt'
          ? { value, index, path, kind: 'insert' }
          : { value, kind, path },
  }));

function expectSameAnswer(f: unknown): void {
  const fast = parseOpFrame(f);
  const zod = opFrameSchema.safeParse(f);
  expect(fast.success).toBe(zod.success);
  if (fast.success && zod.success) {
    expect(fast.data).toStrictEqual(zod.data);
    expect(JSON.stringify(fast.data)).toBe(JSON.stringify(zod.data));
  } else {
    expect(fast.error?.issues).toEqual(zod.error?.issues);
  }
}

describe('parseOpFrame', () => {
  it("answers what zod's schema answers, for any frame a client may send (property)", () => {
    fc.assert(fc.property(frame.map(arriving), expectSameAnswer), { numRuns: 5_000 });
  });

  it('answers valid frames of every kind on its fast path, with the fields in the schema’s order (property)', () => {
    fc.assert(
      fc.property(validFrame, (f) => {
        expectSameAnswer(f);
        const parsed = parseOpFrame(f);
        expect(parsed.success).toBe(true);
        // The fast path built it: zod's own result would be another object, as would this one's.
        expect(parsed.data?.op).not.toBe(f.op);
      }),
      { numRuns: 2_000 },
    );
  });

  it('leaves to zod, with its error, the near misses at each limit', () => {
    const ok = { type: 'op', opId: 'o1', baseVersion: 3, op: { kind: 'set', path: ['title'], value: 'x' } };
    const misses: unknown[] = [
      { ...ok, opId: '' },
      { ...ok, opId: 'x'.repeat(201) },
      { ...ok, opId: 'a\uD800' },
      { ...ok, opId: 'a\0' },
      { ...ok, baseVersion: -1 },
      { ...ok, baseVersion: 1.5 },
      { ...ok, op: { kind: 'set', path: [], value: 1 } },
      { ...ok, op: { kind: 'set', path: ['a'] } },
      { ...ok, op: { kind: 'set', path: ['a'], value: 1, extra: 1 } },
      { ...ok, op: { kind: 'set', path: ['x'.repeat(65)], value: 1 } },
      { ...ok, op: { kind: 'set', path: [1_000_001], value: 1 } },
      { ...ok, op: { kind: 'set', path: [{ id: 'a', b: 1 }], value: 1 } },
      { ...ok, op: { kind: 'set', path: Array(33).fill('a'), value: 1 } },
      { ...ok, op: { kind: 'insert', path: [], index: -1, value: 1 } },
      { ...ok, op: { kind: 'remove', path: ['a'], value: 1 } },
      { ...ok, op: { kind: 'move', path: ['a'] } },
      { ...ok, op: [] },
      { ...ok, type: 'resume' },
    ];
    for (const f of misses) {
      expect(parseOpFrame(f).success).toBe(false);
      expectSameAnswer(f);
    }
    expect(parseOpFrame({ ...ok, extra: 'dropped' })).toEqual({ success: true, data: ok });
  });
});
