import { describe, expect, it } from 'vitest';
import { miniapps } from '../../actors/apps/index.ts';
import { tripPlanner, tripPlannerSchema } from '../../actors/apps/tripPlanner.ts';
import { applyOp } from '../../actors/ops.ts';
import { validate } from '../../actors/schema.ts';
import { day, item, type Trip, trip } from './tripPlannerArbitraries.ts';

const valid = (state: unknown) => validate(tripPlannerSchema, state);
const issuePath = (state: unknown) => valid(state)?.path;

function full(): Trip {
  return trip({
    title: 'Lisbon in May',
    dates: { start: '2026-05-01', end: '2026-05-07' },
    members: ['+15551234567', '+15557654321'],
    days: [
      day(
        'd1',
        [item('i1', 'Tram 28', { time: '09:30', notes: 'buy tickets' }), item('i2', 'Lunch', { time: null })],
        '2026-05-01',
      ),
      day('d2', [], null),
      day('d3'),
    ],
    budget: {
      currency: 'EUR',
      items: [
        { id: 'b1', label: 'Flights', amount: 420.5 },
        { id: 'b2', label: 'Free walk', amount: 0 },
      ],
    },
  });
}

describe('the trip-planner app', () => {
  it('is registered under the name trip-planner', () => {
    expect(miniapps.get('trip-planner')).toBe(tripPlanner);
  });

  it('starts a new session with a valid state carrying the given title', () => {
    const state = tripPlanner.initialState({ title: 'Porto' });
    expect(valid(state)).toBeNull();
    expect(state.title).toBe('Porto');
    expect(valid(tripPlanner.initialState({}))).toBeNull();
  });

  it('accepts a fully populated trip', () => {
    expect(valid(full())).toBeNull();
  });
});

describe('trip-planner state: title', () => {
  it('accepts titles of 1 to 200 characters', () => {
    expect(valid({ ...full(), title: 'x' })).toBeNull();
    expect(valid({ ...full(), title: 'x'.repeat(200) })).toBeNull();
  });

  it('refuses an empty title, one of 201 characters, null and non-strings', () => {
    for (const title of ['', 'x'.repeat(201), null, 42]) expect(issuePath({ ...full(), title })).toEqual(['title']);
  });
});

describe('trip-planner state: dates', () => {
  it('accepts ISO dates with start before or equal to end', () => {
    expect(valid({ ...full(), dates: { start: '2026-05-01', end: '2026-05-01' } })).toBeNull();
    expect(valid({ ...full(), dates: { start: '2025-12-31', end: '2026-01-01' } })).toBeNull();
  });

  it('accepts null for either date and for the whole dates object', () => {
    expect(valid({ ...full(), dates: { start: null, end: '2026-05-01' } })).toBeNull();
    expect(valid({ ...full(), dates: { start: '2026-05-01', end: null } })).toBeNull();
    expect(valid({ ...full(), dates: null })).toBeNull();
  });

  it('refuses a start after the end', () => {
    expect(valid({ ...full(), dates: { start: '2026-05-02', end: '2026-05-01' } })).toEqual({
      path: ['dates'],
      message: 'dates.start must not be after dates.end',
    });
  });

  it('refuses dates that are not real ISO calendar dates', () => {
    for (const start of ['2026-02-30', '2026-5-1', '01/05/2026', '2026-05-01T10:00:00Z', '']) {
      expect(issuePath({ ...full(), dates: { start, end: null } }), start).toEqual(['dates', 'start']);
    }
  });

  it('requires both start and end keys and refuses unknown ones', () => {
    expect(issuePath({ ...full(), dates: { start: null } })).toEqual(['dates', 'end']);
    expect(issuePath({ ...full(), dates: { start: null, end: null, tz: 'UTC' } })).toEqual(['dates', 'tz']);
  });

  it('refuses setting a start after the current end through an op', () => {
    const result = applyOp(tripPlannerSchema, full(), { kind: 'set', path: ['dates', 'start'], value: '2026-06-01' });
    expect(result).toEqual({ ok: false, message: 'dates.start must not be after dates.end' });
  });
});

describe('trip-planner state: members', () => {
  it('accepts up to 100 members', () => {
    expect(valid({ ...full(), members: Array.from({ length: 100 }, (_, i) => `m${i}`) })).toBeNull();
  });

  it('refuses 101 members', () => {
    expect(issuePath({ ...full(), members: Array.from({ length: 101 }, (_, i) => `m${i}`) })).toEqual(['members']);
  });

  it('refuses members that are not strings', () => {
    expect(issuePath({ ...full(), members: ['a', 7] })).toEqual(['members', 1]);
  });

  it('refuses inserting the 101st member through an op', () => {
    const state = { ...full(), members: Array.from({ length: 100 }, (_, i) => `m${i}`) };
    const result = applyOp(tripPlannerSchema, state, { kind: 'insert', path: ['members'], value: 'one more' });
    expect(result.ok).toBe(false);
  });
});

describe('trip-planner state: days', () => {
  it('accepts up to 366 days and refuses 367', () => {
    const days = (n: number) => Array.from({ length: n }, (_, i) => day(`d${i}`));
    expect(valid({ ...full(), days: days(366) })).toBeNull();
    expect(issuePath({ ...full(), days: days(367) })).toEqual(['days']);
  });

  it('refuses inserting the 367th day through an op', () => {
    const state = { ...full(), days: Array.from({ length: 366 }, (_, i) => day(`d${i}`)) };
    const result = applyOp(tripPlannerSchema, state, { kind: 'insert', path: ['days'], value: day('extra') });
    expect(result).toEqual({ ok: false, message: 'days can hold at most 366 items' });
  });

  it('refuses two days with the same id', () => {
    expect(valid({ ...full(), days: [day('a'), day('a')] })).toEqual({
      path: ['days', 1, 'id'],
      message: 'duplicates id "a"',
    });
  });

  it('accepts days without a date, with a null date and out of order', () => {
    expect(
      valid({
        ...full(),
        days: [day('b', [], '2026-05-03'), day('a', [], '2026-05-01'), day('c', [], null), day('d')],
      }),
    ).toBeNull();
  });

  it('refuses a day date that is not an ISO date', () => {
    expect(issuePath({ ...full(), days: [day('a', [], '2026-13-01')] })).toEqual(['days', 0, 'date']);
  });

  it('requires id and items on a day and refuses unknown fields', () => {
    expect(issuePath({ ...full(), days: [{ id: 'a' }] })).toEqual(['days', 0, 'items']);
    expect(issuePath({ ...full(), days: [{ items: [] }] })).toEqual(['days', 0, 'id']);
    expect(issuePath({ ...full(), days: [{ id: 'a', items: [], weather: 'sunny' }] })).toEqual(['days', 0, 'weather']);
  });

  it('refuses day ids that are not strings of 1 to 64 characters', () => {
    expect(valid({ ...full(), days: [day('x'.repeat(64))] })).toBeNull();
    for (const id of ['', 'x'.repeat(65), 5, null])
      expect(valid({ ...full(), days: [{ id, items: [] }] }), String(id)).not.toBeNull();
  });
});

describe('trip-planner state: items', () => {
  const withItems = (items: unknown[]) => ({ ...full(), days: [{ id: 'd', items }] });

  it('accepts up to 200 items in a day and refuses 201', () => {
    const items = (n: number) => Array.from({ length: n }, (_, i) => item(`i${i}`));
    expect(valid(withItems(items(200)))).toBeNull();
    expect(issuePath(withItems(items(201)))).toEqual(['days', 0, 'items']);
  });

  it('refuses two items with the same id in one day, but allows it across days', () => {
    expect(issuePath(withItems([item('i'), item('i')]))).toEqual(['days', 0, 'items', 1, 'id']);
    expect(valid({ ...full(), days: [day('a', [item('i')]), day('b', [item('i')])] })).toBeNull();
  });

  it('accepts a time written HH:MM, null or absent', () => {
    expect(
      valid(
        withItems([
          item('a', 't', { time: '00:00' }),
          item('b', 't', { time: '23:59' }),
          item('c', 't', { time: null }),
          item('d'),
        ]),
      ),
    ).toBeNull();
  });

  it('refuses times that are not HH:MM', () => {
    for (const time of ['24:00', '9:30', '09:60', '09:30:00', '', 930]) {
      expect(issuePath(withItems([{ id: 'a', title: 't', time }])), String(time)).toEqual([
        'days',
        0,
        'items',
        0,
        'time',
      ]);
    }
  });

  it('requires an item title of 1 to 200 characters', () => {
    expect(valid(withItems([item('a', 'x'.repeat(200))]))).toBeNull();
    for (const title of ['', 'x'.repeat(201), undefined, null]) {
      expect(issuePath(withItems([{ id: 'a', title }])), String(title)).toEqual(['days', 0, 'items', 0, 'title']);
    }
  });

  it('accepts notes of up to 2000 characters and refuses 2001', () => {
    expect(valid(withItems([item('a', 't', { notes: '' })]))).toBeNull();
    expect(valid(withItems([item('a', 't', { notes: 'n'.repeat(2000) })]))).toBeNull();
    expect(issuePath(withItems([item('a', 't', { notes: 'n'.repeat(2001) })]))).toEqual([
      'days',
      0,
      'items',
      0,
      'notes',
    ]);
  });

  it('refuses unknown item fields', () => {
    expect(issuePath(withItems([{ id: 'a', title: 't', place: 'Belém' }]))).toEqual(['days', 0, 'items', 0, 'place']);
  });

  it('refuses an item id longer than 64 characters', () => {
    expect(valid(withItems([item('x'.repeat(64))]))).toBeNull();
    expect(valid(withItems([item('x'.repeat(65))]))).not.toBeNull();
  });
});

describe('trip-planner state: budget', () => {
  const withBudget = (budget: unknown) => ({ ...full(), budget });

  it('accepts a currency of exactly three capital letters', () => {
    for (const currency of ['EUR', 'USD', 'JPY'])
      expect(valid(withBudget({ currency, items: [] })), currency).toBeNull();
  });

  it('refuses other currencies', () => {
    for (const currency of ['eur', 'EU', 'EURO', 'E1R', 'ÉUR', '', null]) {
      expect(issuePath(withBudget({ currency, items: [] })), String(currency)).toEqual(['budget', 'currency']);
    }
  });

  it('accepts amounts of zero and more, fractions included', () => {
    expect(
      valid(
        withBudget({
          currency: 'EUR',
          items: [
            { id: 'b', label: 'x', amount: 0 },
            { id: 'c', label: 'y', amount: 12.34 },
          ],
        }),
      ),
    ).toBeNull();
  });

  it('refuses negative, non-finite and non-numeric amounts', () => {
    for (const amount of [-0.01, Number.NaN, Number.POSITIVE_INFINITY, '10']) {
      expect(
        issuePath(withBudget({ currency: 'EUR', items: [{ id: 'b', label: 'x', amount }] })),
        String(amount),
      ).toEqual(['budget', 'items', 0, 'amount']);
    }
  });

  it('refuses duplicate budget item ids and unknown fields', () => {
    const b = { id: 'b', label: 'x', amount: 1 };
    expect(issuePath(withBudget({ currency: 'EUR', items: [b, b] }))).toEqual(['budget', 'items', 1, 'id']);
    expect(issuePath(withBudget({ currency: 'EUR', items: [{ ...b, paid: true }] }))).toEqual([
      'budget',
      'items',
      0,
      'paid',
    ]);
    expect(issuePath(withBudget({ currency: 'EUR', items: [], total: 3 }))).toEqual(['budget', 'total']);
  });

  it('refuses a null budget', () => {
    expect(issuePath(withBudget(null))).toEqual(['budget']);
  });
});

describe('trip-planner state: the root', () => {
  it('refuses unknown top-level fields', () => {
    expect(issuePath({ ...full(), owner: 'me' })).toEqual(['owner']);
  });

  it('requires every top-level field', () => {
    for (const key of ['title', 'dates', 'members', 'days', 'budget'] as const) {
      const { [key]: _gone, ...rest } = full();
      expect(issuePath(rest), key).toEqual([key]);
    }
  });

  it('refuses a state that is not an object', () => {
    for (const v of [null, [], 'trip']) expect(valid(v)).not.toBeNull();
  });
});
