import { describe, expect, it } from 'vitest';
import {
  hhmm,
  ID_MAX,
  idSchema,
  isIsoDate,
  isoDate,
  isPlainObject,
  keyOf,
  type Schema,
  validate,
} from '../../actors/schema.ts';

const str: Schema = { kind: 'string', min: 2, max: 4 };
const num: Schema = { kind: 'number', min: 0, max: 10 };
const obj: Schema = {
  kind: 'object',
  fields: { a: { schema: { kind: 'string', max: 10 } }, b: { schema: num, optional: true } },
};
const keyed: Schema = {
  kind: 'array',
  max: 3,
  keyed: true,
  items: { kind: 'object', fields: { id: { schema: idSchema }, n: { schema: num, optional: true } } },
};

describe('validate: strings', () => {
  it('accepts a string within its length bounds', () => {
    expect(validate(str, 'ab')).toBeNull();
    expect(validate(str, 'abcd')).toBeNull();
  });

  it('refuses strings shorter than min or longer than max, naming the bound', () => {
    expect(validate(str, 'a')).toEqual({ path: [], message: 'must be at least 2 characters' });
    expect(validate(str, 'abcde')).toEqual({ path: [], message: 'must be at most 4 characters' });
  });

  it('refuses values that are not strings', () => {
    for (const v of [1, true, {}, [], undefined]) expect(validate(str, v)?.message).toBe('must be a string');
  });

  it('applies the format check and names the format in the message', () => {
    const date: Schema = { kind: 'string', max: 10, format: isoDate };
    expect(validate(date, '2024-02-29')).toBeNull();
    expect(validate(date, '2023-02-29')?.message).toBe('must be an ISO date (YYYY-MM-DD)');
  });

  it('refuses null unless the schema is nullable', () => {
    expect(validate(str, null)).toEqual({ path: [], message: 'must not be null' });
    expect(validate({ ...str, nullable: true }, null)).toBeNull();
  });

  it('treats a missing min as zero, so the empty string is accepted', () => {
    expect(validate({ kind: 'string', max: 3 }, '')).toBeNull();
  });
});

describe('validate: numbers', () => {
  it('accepts finite numbers within the bounds, bounds included', () => {
    for (const v of [0, 5.5, 10]) expect(validate(num, v)).toBeNull();
  });

  it('refuses NaN, infinities and non-numbers', () => {
    for (const v of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, '1', null]) {
      expect(validate(num, v)).not.toBeNull();
    }
  });

  it('refuses numbers outside the bounds', () => {
    expect(validate(num, -0.01)?.message).toBe('must be ≥ 0');
    expect(validate(num, 10.01)?.message).toBe('must be ≤ 10');
  });

  it('has no bounds when none are given', () => {
    expect(validate({ kind: 'number' }, -1e300)).toBeNull();
  });
});

describe('validate: objects', () => {
  it('accepts an object with its required fields and without its optional ones', () => {
    expect(validate(obj, { a: 'x' })).toBeNull();
    expect(validate(obj, { a: 'x', b: 3 })).toBeNull();
  });

  it('refuses unknown fields, naming them in the path', () => {
    expect(validate(obj, { a: 'x', c: 1 })).toEqual({ path: ['c'], message: 'is not a known field' });
  });

  it('refuses an unknown field even when it is named like an Object.prototype member', () => {
    expect(validate(obj, JSON.parse('{"a":"x","__proto__":{"polluted":true}}'))?.path).toEqual(['__proto__']);
    expect(validate(obj, { a: 'x', toString: 'y' })?.path).toEqual(['toString']);
  });

  it('refuses a missing required field', () => {
    expect(validate(obj, {})).toEqual({ path: ['a'], message: 'is required' });
  });

  it('treats an undefined field as absent', () => {
    expect(validate(obj, { a: 'x', b: undefined })).toBeNull();
    expect(validate(obj, { a: undefined })).toEqual({ path: ['a'], message: 'is required' });
  });

  it('refuses arrays and primitives where an object is expected', () => {
    for (const v of [[], 'x', 1]) expect(validate(obj, v)?.message).toBe('must be an object');
  });

  it('reports nested issues with their full path', () => {
    const outer: Schema = { kind: 'object', fields: { inner: { schema: obj } } };
    expect(validate(outer, { inner: { a: 'x', b: 11 } })).toEqual({ path: ['inner', 'b'], message: 'must be ≤ 10' });
  });

  it('runs the cross-field rule only when every field is valid, and reports it on the object', () => {
    const calls: unknown[] = [];
    const refined: Schema = {
      ...(obj as Extract<Schema, { kind: 'object' }>),
      refine: (v) => {
        calls.push(v);
        return v.b === 0 ? 'b must not be zero' : null;
      },
    };
    expect(validate(refined, { a: 'x', b: 0 }, ['root'])).toEqual({ path: ['root'], message: 'b must not be zero' });
    expect(validate(refined, { a: 1 })).not.toBeNull();
    expect(calls).toHaveLength(1);
  });
});

describe('validate: arrays', () => {
  it('refuses more items than max', () => {
    expect(validate(keyed, [{ id: 'a' }, { id: 'b' }, { id: 'c' }])).toBeNull();
    expect(validate(keyed, [{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }])?.message).toBe(
      'must have at most 3 items',
    );
  });

  it('validates every item, reporting the index in the path', () => {
    expect(validate(keyed, [{ id: 'a' }, { id: 'b', n: -1 }])).toEqual({ path: [1, 'n'], message: 'must be ≥ 0' });
  });

  it('refuses duplicate ids in a keyed array', () => {
    expect(validate(keyed, [{ id: 'a' }, { id: 'a' }])).toEqual({ path: [1, 'id'], message: 'duplicates id "a"' });
  });

  it('allows the same id in two different keyed arrays', () => {
    const two: Schema = { kind: 'object', fields: { x: { schema: keyed }, y: { schema: keyed } } };
    expect(validate(two, { x: [{ id: 'a' }], y: [{ id: 'a' }] })).toBeNull();
  });

  it('refuses ids that are empty or longer than ID_MAX characters', () => {
    expect(validate(keyed, [{ id: '' }])).not.toBeNull();
    expect(validate(keyed, [{ id: 'x'.repeat(ID_MAX) }])).toBeNull();
    expect(validate(keyed, [{ id: 'x'.repeat(ID_MAX + 1) }])).not.toBeNull();
  });

  it('does not require ids or uniqueness in a plain array', () => {
    const plain: Schema = { kind: 'array', max: 5, items: { kind: 'string', max: 3 } };
    expect(validate(plain, ['a', 'a'])).toBeNull();
  });

  it('refuses an object where an array is expected', () => {
    expect(validate(keyed, { 0: { id: 'a' } })?.message).toBe('must be an array');
  });
});

describe('keyOf and isPlainObject', () => {
  it('returns the id of an item with a valid string id, and null otherwise', () => {
    expect(keyOf({ id: 'a' })).toBe('a');
    expect(keyOf({ id: '' })).toBeNull();
    expect(keyOf({ id: 7 })).toBeNull();
    expect(keyOf({ id: 'x'.repeat(ID_MAX + 1) })).toBeNull();
    expect(keyOf('a')).toBeNull();
    expect(keyOf(null)).toBeNull();
    expect(keyOf([{ id: 'a' }])).toBeNull();
  });

  it('calls objects plain but not arrays or null', () => {
    expect(isPlainObject({})).toBe(true);
    expect(isPlainObject([])).toBe(false);
    expect(isPlainObject(null)).toBe(false);
    expect(isPlainObject('x')).toBe(false);
  });
});

describe('isIsoDate', () => {
  it('accepts real calendar dates, leap days included', () => {
    for (const d of ['2024-01-01', '2024-02-29', '2000-02-29', '1999-12-31', '9999-12-31']) {
      expect(isIsoDate(d), d).toBe(true);
    }
  });

  it('refuses dates that do not exist', () => {
    for (const d of [
      '2023-02-29',
      '1900-02-29',
      '2024-04-31',
      '2024-13-01',
      '2024-00-10',
      '2024-01-00',
      '2024-01-32',
    ]) {
      expect(isIsoDate(d), d).toBe(false);
    }
  });

  it('refuses other spellings and surrounding text', () => {
    for (const d of [
      '2024-1-01',
      '24-01-01',
      '2024/01/01',
      ' 2024-01-01',
      '2024-01-01 ',
      '2024-01-01\n',
      '2024-01-01T00:00:00Z',
      '',
      '２０２４-01-01',
    ]) {
      expect(isIsoDate(d), JSON.stringify(d)).toBe(false);
    }
  });

  // Documents a bug: Date.UTC maps years 0–99 to 1900–1999, so these real dates are refused.
  it('accepts real calendar dates in the years 0000–0099', () => {
    for (const d of ['0001-01-01', '0050-06-15', '0099-12-31']) expect(isIsoDate(d), d).toBe(true);
  });
});

describe('hhmm', () => {
  it('accepts 24-hour times from 00:00 to 23:59', () => {
    for (const t of ['00:00', '09:05', '12:30', '23:59']) expect(hhmm?.test(t), t).toBe(true);
  });

  it('refuses hours past 23, minutes past 59 and other spellings', () => {
    for (const t of ['24:00', '12:60', '7:30', '07:3', '0730', '07:30:00', ' 07:30', '07:30\n', '']) {
      expect(hhmm?.test(t), JSON.stringify(t)).toBe(false);
    }
  });
});
