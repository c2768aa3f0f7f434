/**
 * Well-formed text (docs/protocol.md "Tenancy and hostile input"): the predicate, the one zod
 * refinement every client-facing schema uses, the deep check of op contents and the
 * sanitising of model output.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { tripPlanner } from '../../actors/apps/tripPlanner.ts';
import { applyOp, type Op } from '../../actors/ops.ts';
import { validate } from '../../actors/schema.ts';
import { isWellFormedJson, isWellFormedText, TEXT_RULE, toWellFormedText } from '../../actors/text.ts';
import { text } from '../../actors/wellFormedText.ts';

/** Any sequence of UTF-16 code units: lone surrogates and U+0000 included. */
const anyUnits = fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((u) => String.fromCharCode(u)) });
/** Well-formed strings (whole code points, surrogate pairs included) without U+0000. */
const goodText = fc.string({ unit: 'binary' }).map((s) => s.replaceAll('\0', ''));
const loneSurrogate = fc.oneof(fc.integer({ min: 0xd800, max: 0xdfff })).map((u) => String.fromCharCode(u));
const bad = fc.oneof(fc.constant('\0'), loneSurrogate);

/** `bad` put between two code points of `good`: it cannot pair with a neighbour there. */
const poisoned = fc.tuple(goodText, bad, fc.nat()).map(([good, b, at]) => {
  const points = [...good];
  const i = at % (points.length + 1);
  return [...points.slice(0, i), b, ...points.slice(i)].join('');
});

/** An oracle that does not use `isWellFormed`: UTF-8 round-trips exactly the well-formed strings. */
const roundTrips = (s: string) => new TextDecoder().decode(new TextEncoder().encode(s)) === s;

describe('well-formed text', () => {
  it('accepts every well-formed string without U+0000', () => {
    fc.assert(fc.property(goodText, (s) => isWellFormedText(s) && text().safeParse(s).success));
  });

  it('refuses every string holding U+0000 or a lone surrogate, wherever it is', () => {
    fc.assert(fc.property(poisoned, (s) => !isWellFormedText(s) && !text().safeParse(s).success));
  });

  it('agrees with a UTF-8 round trip on arbitrary code units', () => {
    fc.assert(
      fc.property(anyUnits, (s) => {
        expect(isWellFormedText(s)).toBe(roundTrips(s) && !s.includes('\0'));
      }),
    );
  });

  it('judges the same without String.prototype.isWellFormed, as in older browsers', () => {
    const proto = String.prototype as { isWellFormed?: unknown };
    const native = proto.isWellFormed;
    proto.isWellFormed = undefined;
    try {
      fc.assert(
        fc.property(anyUnits, (s) => {
          expect(isWellFormedText(s)).toBe(roundTrips(s) && !s.includes('\0'));
        }),
      );
    } finally {
      proto.isWellFormed = native;
    }
  });

  it('names the rule with the path in zod issues, without echoing the value', () => {
    const result = text().min(1).safeParse('secret\0');
    expect(result.success).toBe(false);
    expect(result.error?.issues[0].message).toBe(TEXT_RULE);
    expect(result.error?.issues[0].message).not.toContain('secret');
  });

  it('makes model output storable: U+0000 dropped, lone surrogates replaced, good text unchanged', () => {
    fc.assert(fc.property(anyUnits, (s) => isWellFormedText(toWellFormedText(s))));
    fc.assert(fc.property(goodText, (s) => toWellFormedText(s) === s));
    expect(toWellFormedText('a\0b\ud800c')).toBe('ab\ufffdc');
  });
});

describe('well-formed JSON values', () => {
  const json = fc.jsonValue().map((v) => JSON.parse(JSON.stringify(v)) as unknown);

  it('finds a bad string or object key anywhere in a value', () => {
    fc.assert(
      fc.property(json, poisoned, fc.boolean(), (value, b, asKey) => {
        const wrapped = asKey ? [{ ok: value, [b]: 1 }] : { deep: [value, { x: b }] };
        return !isWellFormedJson(wrapped);
      }),
    );
    fc.assert(fc.property(json, (value) => isWellFormedJson(value) === roundTrips(JSON.stringify(value))));
  });

  it('checks a 30,000-deep value without overflowing the stack', () => {
    let deep: unknown = 'bad\0';
    for (let i = 0; i < 30_000; i++) deep = [deep];
    expect(isWellFormedJson(deep)).toBe(false);
  });
});

describe('ops with malformed text', () => {
  const state = {
    ...tripPlanner.initialState({ title: 'Lisbon' }),
    days: [{ id: 'd1', items: [] }],
  };
  const refused = (op: Op) => {
    const result = applyOp(tripPlanner.schema, state, op);
    expect(result.ok, JSON.stringify(op)).toBe(false);
    return result.ok ? '' : result.message;
  };

  it('refuses them in values, item ids, object keys and path segments, whatever the op', () => {
    fc.assert(
      fc.property(poisoned, (b) => {
        refused({ kind: 'set', path: ['title'], value: b });
        refused({ kind: 'insert', path: ['members'], value: b });
        refused({ kind: 'insert', path: ['days'], value: { id: b, items: [] } });
        refused({ kind: 'insert', path: ['days', { id: 'd1' }, 'items'], value: { id: 'i1', title: 'x', [b]: 1 } });
        refused({ kind: 'set', path: ['days', { id: b }, 'date'], value: null });
        refused({ kind: 'remove', path: ['days', { id: 'd1' }, b] });
      }),
    );
  });

  it('says why without echoing the value', () => {
    expect(refused({ kind: 'set', path: ['title'], value: 'secret\0' })).not.toContain('secret');
    expect(refused({ kind: 'remove', path: ['secret\ud800'] })).not.toContain('secret');
  });

  it('is refused by the app schema itself, so a state can never hold it', () => {
    expect(validate(tripPlanner.schema, { ...state, title: 'a\ud800' })).toEqual({
      path: ['title'],
      message: TEXT_RULE,
    });
  });
});
