/**
 * Generators shared by the miniapp unit and property tests: valid trip-planner states (as
 * fast-check arbitraries) and "valid-ish" ops drawn from a state with a seeded PRNG, so a
 * simulated client can make edits against whatever view it has at that moment.
 */
import fc from 'fast-check';
import type { TripPlannerState } from '../../actors/apps/tripPlanner.ts';
import { tripPlanner } from '../../actors/apps/tripPlanner.ts';
import type { Op, PathSegment } from '../../actors/ops.ts';

export type Trip = TripPlannerState;
type Day = Trip['days'][number];
type Item = Day['items'][number];

/** A fresh trip-planner state with optional overrides. */
export function trip(overrides: Partial<Trip> = {}): Trip {
  return { ...tripPlanner.initialState({ title: 'Lisbon' }), ...overrides };
}

export function day(id: string, items: Item[] = [], date?: string | null): Day {
  return date === undefined ? { id, items } : { id, date, items };
}

export function item(id: string, title = `item ${id}`, extra: Partial<Item> = {}): Item {
  return { id, title, ...extra };
}

/** Freezes a JSON value and everything inside it, so any mutation throws (ESM is strict). */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

const DAY_MS = 86_400_000;
const MIN_DAY = Date.UTC(2020, 0, 1) / DAY_MS;
const MAX_DAY = Date.UTC(2030, 11, 31) / DAY_MS;

export const isoDateArb = fc
  .integer({ min: MIN_DAY, max: MAX_DAY })
  .map((d) => new Date(d * DAY_MS).toISOString().slice(0, 10));

const hhmmArb = fc
  .tuple(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 59 }))
  .map(([h, m]) => `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}`);

const textArb = (min: number, max: number) => fc.string({ minLength: min, maxLength: max });
const idArb = (prefix: string) => fc.integer({ min: 0, max: 30 }).map((n) => `${prefix}${n}`);

const itemArb: fc.Arbitrary<Item> = fc.record(
  { id: idArb('i'), time: fc.option(hhmmArb, { nil: null }), title: textArb(1, 12), notes: textArb(0, 20) },
  { requiredKeys: ['id', 'title'] },
);

const dayArb: fc.Arbitrary<Day> = fc.record(
  {
    id: idArb('d'),
    date: fc.option(isoDateArb, { nil: null }),
    items: fc.uniqueArray(itemArb, { selector: (i) => i.id, maxLength: 4 }),
  },
  { requiredKeys: ['id', 'items'] },
);

const datesArb: fc.Arbitrary<Trip['dates']> = fc.oneof(
  fc.constant(null),
  fc.record({ start: fc.constant(null), end: fc.constant(null) }),
  fc.tuple(isoDateArb, isoDateArb).map(([a, b]) => (a <= b ? { start: a, end: b } : { start: b, end: a })),
  isoDateArb.map((d) => ({ start: d, end: null })),
);

/** Any valid trip-planner state (kept small so properties run fast). */
export const tripStateArb: fc.Arbitrary<Trip> = fc.record({
  title: textArb(1, 20),
  dates: datesArb,
  members: fc.array(textArb(1, 8), { maxLength: 5 }),
  days: fc.uniqueArray(dayArb, { selector: (d) => d.id, maxLength: 4 }),
  budget: fc.record({
    currency: fc.constantFrom('USD', 'EUR', 'JPY'),
    items: fc.uniqueArray(
      fc.record({ id: idArb('b'), label: textArb(1, 10), amount: fc.double({ min: 0, max: 1e6, noNaN: true }) }),
      { selector: (b) => b.id, maxLength: 3 },
    ),
  }),
});

/** A small deterministic PRNG (mulberry32), so an op is a pure function of (state, seed). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** 0…n-1 */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(values: readonly T[]): T {
    return values[this.int(values.length)];
  }
  text(min: number, max: number): string {
    const n = min + this.int(max - min + 1);
    let s = '';
    for (let i = 0; i < n; i++) s += 'abcdefghijklmnopqrstuvwxyz '[this.int(27)];
    return s;
  }
  date(): string {
    return new Date((MIN_DAY + this.int(MAX_DAY - MIN_DAY)) * DAY_MS).toISOString().slice(0, 10);
  }
  time(): string {
    return `${String(this.int(24)).padStart(2, '0')}:${String(this.int(60)).padStart(2, '0')}`;
  }
}

/** Picks an existing item by `{id}` or by index, sometimes one that does not exist. */
function segment(r: Rng, items: readonly { id: string }[]): PathSegment {
  if (r.chance(0.5)) {
    if (items.length === 0 || r.chance(0.1)) return { id: 'missing' };
    return { id: r.pick(items).id };
  }
  return r.int(items.length + (r.chance(0.1) ? 2 : 0) || 1);
}

function resolve<T extends { id: string }>(items: readonly T[], seg: PathSegment): T | undefined {
  return typeof seg === 'number' ? items[seg] : items.find((i) => typeof seg === 'object' && i.id === seg.id);
}

/** A new id, or now and then one that already exists (so inserts can collide). */
function newId(r: Rng, prefix: string, existing: readonly { id: string }[], fresh: () => string): string {
  return existing.length && r.chance(0.1) ? r.pick(existing).id : `${prefix}${fresh()}`;
}

function maybeIndex(r: Rng, length: number): number | undefined {
  if (r.chance(0.4)) return undefined;
  return r.int(length + (r.chance(0.1) ? 3 : 1));
}

/**
 * A "valid-ish" op against `view`: mostly edits that fit the schema, with a sprinkling of
 * ones that do not (too-long titles, missing items, bad dates, duplicate ids), addressing
 * keyed items by id and by index.
 */
export function randomOp(view: Trip, r: Rng, fresh: () => string): Op {
  const days = view.days;
  const d = segment(r, days);
  const theDay = resolve(days, d);
  const items = theDay?.items ?? [];
  switch (r.int(19)) {
    case 0:
      return {
        kind: 'set',
        path: ['title'],
        value: r.chance(0.05) ? '' : r.chance(0.05) ? 'x'.repeat(201) : r.text(1, 12),
      };
    case 1: {
      if (r.chance(0.2)) return { kind: 'set', path: ['dates'], value: null };
      const [a, b] = [r.date(), r.date()];
      return {
        kind: 'set',
        path: ['dates'],
        value: r.chance(0.8) && a > b ? { start: b, end: a } : { start: a, end: b },
      };
    }
    case 2:
      return {
        kind: 'set',
        path: ['dates', r.pick(['start', 'end'])],
        value: r.chance(0.15) ? null : r.chance(0.05) ? '2024-02-30' : r.date(),
      };
    case 3: {
      const value: Day = { id: newId(r, 'd', days, fresh), items: [] };
      if (r.chance(0.5)) value.date = r.chance(0.2) ? null : r.date();
      return { kind: 'insert', path: ['days'], index: maybeIndex(r, days.length), value };
    }
    case 4:
      return { kind: 'remove', path: ['days', d] };
    case 5:
      return {
        kind: 'set',
        path: ['days', d, 'date'],
        value: r.chance(0.2) ? null : r.chance(0.05) ? 'tomorrow' : r.date(),
      };
    case 6: {
      const value: Item = { id: newId(r, 'i', items, fresh), title: r.chance(0.05) ? '' : r.text(1, 10) };
      if (r.chance(0.4)) value.time = r.chance(0.2) ? null : r.chance(0.05) ? '25:00' : r.time();
      return { kind: 'insert', path: ['days', d, 'items'], index: maybeIndex(r, items.length), value };
    }
    case 7:
      return { kind: 'remove', path: ['days', d, 'items', segment(r, items)] };
    case 8: {
      const field = r.pick(['title', 'time', 'notes'] as const);
      const value =
        field === 'title'
          ? r.text(r.chance(0.05) ? 0 : 1, 10)
          : field === 'time'
            ? r.chance(0.2)
              ? null
              : r.time()
            : r.chance(0.05)
              ? 'n'.repeat(2001)
              : r.text(0, 30);
      return { kind: 'set', path: ['days', d, 'items', segment(r, items), field], value };
    }
    case 9:
      return { kind: 'insert', path: ['members'], index: maybeIndex(r, view.members.length), value: r.text(1, 8) };
    case 10:
      return { kind: 'remove', path: ['members', r.int(view.members.length + 1)] };
    case 11:
      return {
        kind: 'set',
        path: ['members', r.int(view.members.length + 1)],
        value: r.text(r.chance(0.05) ? 0 : 1, 8),
      };
    case 12: {
      const existing = view.budget.items;
      const amount = r.chance(0.05) ? -1 : Math.round(r.next() * 100_000) / 100;
      return {
        kind: 'insert',
        path: ['budget', 'items'],
        index: maybeIndex(r, existing.length),
        value: { id: newId(r, 'b', existing, fresh), label: r.text(1, 10), amount },
      };
    }
    case 13:
      return { kind: 'remove', path: ['budget', 'items', segment(r, view.budget.items)] };
    case 14:
      return {
        kind: 'set',
        path: ['budget', 'items', segment(r, view.budget.items), 'amount'],
        value: r.chance(0.05) ? -5 : r.int(1000),
      };
    case 15:
      return { kind: 'set', path: ['budget', 'currency'], value: r.pick(['EUR', 'USD', 'GBP', 'eur', 'EURO']) };
    case 16:
      return r.chance(0.5)
        ? { kind: 'remove', path: ['days', d, 'date'] }
        : { kind: 'remove', path: ['days', d, 'items', segment(r, items), r.pick(['notes', 'time', 'title'])] };
    case 17: {
      const id = theDay?.id ?? 'missing';
      return { kind: 'set', path: ['days', d], value: { id: r.chance(0.1) ? 'other' : id, date: r.date(), items: [] } };
    }
    default: {
      // Renaming an item's id through its field, sometimes to an id a sibling already has.
      const index = r.int(Math.max(1, days.length));
      const target = days.length && r.chance(0.5) ? r.pick(days).id : `d${fresh()}`;
      return { kind: 'set', path: ['days', index, 'id'], value: target };
    }
  }
}
