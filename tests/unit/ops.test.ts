import { describe, expect, it } from 'vitest';
import { tripPlannerSchema as schema } from '../../actors/apps/tripPlanner.ts';
import { applyOp, claimedPath, type Op, overlaps, type Path, schemaAt, sharedWith } from '../../actors/ops.ts';
import { validate } from '../../actors/schema.ts';
import { day, deepFreeze, item, type Trip, trip } from './tripPlannerArbitraries.ts';

function base(): Trip {
  return deepFreeze(
    trip({
      members: ['ann', 'bob', 'cy'],
      days: [day('d1', [item('i1'), item('i2', 'Lunch', { notes: 'cheap' })], '2026-05-01'), day('d2'), day('d3')],
      budget: { currency: 'EUR', items: [{ id: 'b1', label: 'Hotel', amount: 300 }] },
    }),
  );
}

function ok(state: unknown, op: Op): { state: Trip; touched: Path } {
  const result = applyOp(schema, state, op);
  if (!result.ok) throw new Error(`expected ${JSON.stringify(op)} to apply: ${result.message}`);
  return { state: result.state as Trip, touched: result.touched };
}

function refused(state: unknown, op: Op): string {
  const result = applyOp(schema, state, op);
  if (result.ok) throw new Error(`expected ${JSON.stringify(op)} to be refused`);
  return result.message;
}

describe('applyOp: set', () => {
  it('sets a top-level field and reports its path as touched', () => {
    const { state, touched } = ok(base(), { kind: 'set', path: ['title'], value: 'Porto' });
    expect(state.title).toBe('Porto');
    expect(touched).toEqual(['title']);
  });

  it('sets a field inside an item addressed by id, touching the id path', () => {
    const { state, touched } = ok(base(), {
      kind: 'set',
      path: ['days', { id: 'd1' }, 'items', { id: 'i2' }, 'title'],
      value: 'Dinner',
    });
    expect(state.days[0].items[1].title).toBe('Dinner');
    expect(touched).toEqual(['days', { id: 'd1' }, 'items', { id: 'i2' }, 'title']);
  });

  it('reports the op’s own path as touched when it names the same segments (a logged op keeps one array)', () => {
    const path = ['days', { id: 'd1' }, 'items', { id: 'i2' }, 'title'];
    expect(ok(base(), { kind: 'set', path, value: 'Dinner' }).touched).toBe(path);
    const removed = ['days', { id: 'd2' }];
    expect(ok(base(), { kind: 'remove', path: removed }).touched).toBe(removed);
    // An index translated to an id is a path of its own; the op's stays as it was sent.
    const byIndex = ['days', 1, 'date'];
    const { touched } = ok(base(), { kind: 'set', path: byIndex, value: '2026-05-02' });
    expect(touched).not.toBe(byIndex);
    expect(byIndex).toEqual(['days', 1, 'date']);
  });

  it('shares an op’s path with a touched path equal to it by value, as read back from the store', () => {
    const path = ['days', { id: 'd1' }, 'title'];
    expect(sharedWith(path, ['days', { id: 'd1' }, 'title'])).toBe(path);
    for (const other of [['days', { id: 'd2' }, 'title'], ['days', 0, 'title'], ['days', { id: 'd1' }], ['days']]) {
      expect(sharedWith(path, other)).toBe(other);
    }
  });

  it('translates indexes into keyed arrays to ids in the touched path', () => {
    const { state, touched } = ok(base(), { kind: 'set', path: ['days', 1, 'date'], value: '2026-05-02' });
    expect(state.days[1]).toEqual({ id: 'd2', items: [], date: '2026-05-02' });
    expect(touched).toEqual(['days', { id: 'd2' }, 'date']);
  });

  it('keeps indexes in the touched path of arrays of plain values', () => {
    const { state, touched } = ok(base(), { kind: 'set', path: ['members', 1], value: 'bea' });
    expect(state.members).toEqual(['ann', 'bea', 'cy']);
    expect(touched).toEqual(['members', 1]);
  });

  it('adds an optional field that was absent', () => {
    const { state } = ok(base(), {
      kind: 'set',
      path: ['days', { id: 'd1' }, 'items', { id: 'i1' }, 'time'],
      value: '08:15',
    });
    expect(state.days[0].items[0]).toEqual({ id: 'i1', title: 'item i1', time: '08:15' });
  });

  it('replaces a whole keyed item when its id stays the same', () => {
    const { state, touched } = ok(base(), { kind: 'set', path: ['days', { id: 'd2' }], value: day('d2', [item('x')]) });
    expect(state.days[1]).toEqual(day('d2', [item('x')]));
    expect(touched).toEqual(['days', { id: 'd2' }]);
  });

  it('refuses replacing a keyed item with one of another id', () => {
    expect(refused(base(), { kind: 'set', path: ['days', 0], value: day('d9') })).toBe(
      'an item keeps its "id"; remove it and insert a new one instead',
    );
  });

  it('refuses a value the schema does not accept, naming where', () => {
    expect(refused(base(), { kind: 'set', path: ['title'], value: '' })).toBe('title must be at least 1 characters');
    expect(refused(base(), { kind: 'set', path: ['days', { id: 'd1' }, 'date'], value: '2026-02-30' })).toContain(
      'must be an ISO date',
    );
    expect(refused(base(), { kind: 'set', path: ['budget'], value: { currency: 'EUR', items: [], x: 1 } })).toBe(
      'budget.x is not a known field',
    );
  });

  it('refuses fields the schema does not have', () => {
    expect(refused(base(), { kind: 'set', path: ['owner'], value: 'me' })).toBe('"owner" is not a field here');
    expect(refused(base(), { kind: 'set', path: ['toString'], value: 'me' })).toBe('"toString" is not a field here');
    expect(refused(base(), { kind: 'set', path: ['__proto__'], value: {} })).toBe('"__proto__" is not a field here');
  });

  it('refuses an empty path', () => {
    expect(refused(base(), { kind: 'set', path: [], value: trip() })).toBe('the path must not be empty');
  });

  it('refuses items that do not exist, by id and by index', () => {
    expect(refused(base(), { kind: 'set', path: ['days', { id: 'nope' }, 'date'], value: null })).toBe(
      'no item with id "nope"',
    );
    expect(refused(base(), { kind: 'set', path: ['days', 3, 'date'], value: null })).toBe('index 3 is out of range');
    expect(refused(base(), { kind: 'set', path: ['members', -1], value: 'x' })).toBe('index -1 is out of range');
    expect(refused(base(), { kind: 'set', path: ['members', 0.5], value: 'x' })).toBe('index 0.5 is out of range');
  });

  it('refuses {id} segments in arrays of plain values', () => {
    expect(refused(base(), { kind: 'set', path: ['members', { id: 'ann' }], value: 'x' })).toBe(
      'items of this array have no id; address them by index',
    );
  });

  it('refuses going inside a string or inside null', () => {
    expect(refused(base(), { kind: 'set', path: ['title', 'x'], value: 'y' })).toBe('cannot go inside a string');
    const noDates = ok(base(), { kind: 'set', path: ['dates'], value: null }).state;
    expect(refused(noDates, { kind: 'set', path: ['dates', 'start'], value: '2026-01-01' })).toBe(
      'cannot edit inside null',
    );
  });

  it('refuses a field name where an array index is expected and the other way round', () => {
    expect(refused(base(), { kind: 'set', path: ['days', '0', 'date'], value: null })).toContain(
      'expected an index or {id}',
    );
    expect(refused(base(), { kind: 'set', path: [0], value: 'x' })).toContain('expected a field name');
  });

  it('checks the cross-field rule of the objects above the edit', () => {
    const dated = ok(base(), { kind: 'set', path: ['dates'], value: { start: '2026-05-01', end: '2026-05-09' } }).state;
    expect(refused(dated, { kind: 'set', path: ['dates', 'end'], value: '2026-04-30' })).toBe(
      'dates.start must not be after dates.end',
    );
    expect(
      refused(base(), { kind: 'set', path: ['dates'], value: { start: '2026-05-02', end: '2026-05-01' } }),
    ).toContain('dates.start must not be after dates.end');
    expect(ok(dated, { kind: 'set', path: ['dates', 'end'], value: '2026-05-01' }).state.dates).toEqual({
      start: '2026-05-01',
      end: '2026-05-01',
    });
  });

  // Documents a bug: setting a keyed item's `id` field by index bypasses the uniqueness check.
  it('refuses giving a day the id another day already has through its id field', () => {
    const result = applyOp(schema, base(), { kind: 'set', path: ['days', 0, 'id'], value: 'd2' });
    expect(result.ok).toBe(false);
  });

  // Documents the same bug: `set [..., {id}, 'items', 0, 'id']` and budget items behave alike.
  it("refuses giving an item or a budget line a sibling's id through its id field", () => {
    expect(
      applyOp(schema, base(), { kind: 'set', path: ['days', { id: 'd1' }, 'items', 1, 'id'], value: 'i1' }).ok,
    ).toBe(false);
    const twoLines = ok(base(), {
      kind: 'insert',
      path: ['budget', 'items'],
      value: { id: 'b2', label: 'Food', amount: 5 },
    }).state;
    expect(applyOp(schema, twoLines, { kind: 'set', path: ['budget', 'items', 1, 'id'], value: 'b1' }).ok).toBe(false);
  });
});

describe('applyOp: insert', () => {
  it('appends when the index is omitted, touching the new item by id', () => {
    const { state, touched } = ok(base(), { kind: 'insert', path: ['days'], value: day('d4') });
    expect(state.days.map((d) => d.id)).toEqual(['d1', 'd2', 'd3', 'd4']);
    expect(touched).toEqual(['days', { id: 'd4' }]);
  });

  it('inserts at a given index from 0 to the length', () => {
    expect(
      ok(base(), { kind: 'insert', path: ['days'], index: 0, value: day('d0') }).state.days.map((d) => d.id),
    ).toEqual(['d0', 'd1', 'd2', 'd3']);
    expect(
      ok(base(), { kind: 'insert', path: ['days'], index: 3, value: day('d4') }).state.days.map((d) => d.id),
    ).toEqual(['d1', 'd2', 'd3', 'd4']);
  });

  it('refuses an index outside 0…length', () => {
    expect(refused(base(), { kind: 'insert', path: ['days'], index: 4, value: day('d4') })).toBe(
      'index 4 is out of range 0…3',
    );
    expect(refused(base(), { kind: 'insert', path: ['days'], index: -1, value: day('d4') })).toBe(
      'index -1 is out of range 0…3',
    );
    expect(refused(base(), { kind: 'insert', path: ['days'], index: 1.5, value: day('d4') })).toBe(
      'index 1.5 is out of range 0…3',
    );
  });

  it('inserts an item into a day addressed by id or by index', () => {
    const byId = ok(base(), { kind: 'insert', path: ['days', { id: 'd2' }, 'items'], value: item('x') });
    expect(byId.state.days[1].items).toEqual([item('x')]);
    expect(byId.touched).toEqual(['days', { id: 'd2' }, 'items', { id: 'x' }]);
    const byIndex = ok(base(), { kind: 'insert', path: ['days', 1, 'items'], value: item('x') });
    expect(byIndex.state).toEqual(byId.state);
    expect(byIndex.touched).toEqual(byId.touched);
  });

  it('touches the whole array when inserting into an array of plain values', () => {
    const { state, touched } = ok(base(), { kind: 'insert', path: ['members'], index: 1, value: 'dee' });
    expect(state.members).toEqual(['ann', 'dee', 'bob', 'cy']);
    expect(touched).toEqual(['members']);
  });

  it('refuses an item whose id is already in the array, but allows it in another array', () => {
    expect(refused(base(), { kind: 'insert', path: ['days'], value: day('d2') })).toBe(
      'an item with id "d2" already exists',
    );
    expect(
      ok(base(), { kind: 'insert', path: ['days', { id: 'd2' }, 'items'], value: item('i1') }).state.days[1].items,
    ).toEqual([item('i1')]);
  });

  it('refuses an item without a valid id in a keyed array', () => {
    expect(refused(base(), { kind: 'insert', path: ['days'], value: { items: [] } })).toContain('id');
    expect(refused(base(), { kind: 'insert', path: ['days'], value: { id: 'x'.repeat(65), items: [] } })).toContain(
      'id',
    );
  });

  it('refuses an item the schema does not accept, naming where', () => {
    expect(refused(base(), { kind: 'insert', path: ['days'], value: { id: 'd4', items: [], extra: 1 } })).toBe(
      'days.3.extra is not a known field',
    );
    expect(refused(base(), { kind: 'insert', path: ['members'], value: 7 })).toBe('members.3 must be a string');
  });

  it('refuses inserting into something that is not an array', () => {
    expect(refused(base(), { kind: 'insert', path: ['title'], value: 'x' })).toBe('title is not an array');
    expect(refused(base(), { kind: 'insert', path: [], value: 'x' })).toBe('the state is not an array');
    expect(refused(base(), { kind: 'insert', path: ['budget'], value: 'x' })).toBe('budget is not an array');
  });

  it('refuses the 201st item of a day', () => {
    const full = ok(base(), {
      kind: 'set',
      path: ['days', { id: 'd2' }, 'items'],
      value: Array.from({ length: 200 }, (_, i) => item(`i${i}`)),
    }).state;
    expect(refused(full, { kind: 'insert', path: ['days', { id: 'd2' }, 'items'], value: item('one-more') })).toBe(
      'days.{id:"d2"}.items can hold at most 200 items',
    );
  });
});

describe('applyOp: remove', () => {
  it('removes a keyed item by id, touching its id path', () => {
    const { state, touched } = ok(base(), { kind: 'remove', path: ['days', { id: 'd2' }] });
    expect(state.days.map((d) => d.id)).toEqual(['d1', 'd3']);
    expect(touched).toEqual(['days', { id: 'd2' }]);
  });

  it('removes a keyed item by index, still touching it by id', () => {
    const { state, touched } = ok(base(), { kind: 'remove', path: ['days', 0, 'items', 1] });
    expect(state.days[0].items).toEqual([item('i1')]);
    expect(touched).toEqual(['days', { id: 'd1' }, 'items', { id: 'i2' }]);
  });

  it('touches the whole array when removing a plain value by index', () => {
    const { state, touched } = ok(base(), { kind: 'remove', path: ['members', 0] });
    expect(state.members).toEqual(['bob', 'cy']);
    expect(touched).toEqual(['members']);
  });

  it('removes an optional field', () => {
    const { state, touched } = ok(base(), {
      kind: 'remove',
      path: ['days', { id: 'd1' }, 'items', { id: 'i2' }, 'notes'],
    });
    expect(state.days[0].items[1]).toEqual(item('i2', 'Lunch'));
    expect(touched).toEqual(['days', { id: 'd1' }, 'items', { id: 'i2' }, 'notes']);
    expect(ok(base(), { kind: 'remove', path: ['days', 0, 'date'] }).state.days[0]).toEqual(
      day('d1', base().days[0].items),
    );
  });

  it('refuses removing a required field', () => {
    expect(refused(base(), { kind: 'remove', path: ['title'] })).toBe('title is required and cannot be removed');
    expect(refused(base(), { kind: 'remove', path: ['days', 0, 'items'] })).toBe(
      'days.0.items is required and cannot be removed',
    );
    expect(refused(base(), { kind: 'remove', path: ['days', 0, 'id'] })).toContain('required');
  });

  it('refuses removing what is not there', () => {
    expect(refused(base(), { kind: 'remove', path: ['days', { id: 'd1' }, 'items', { id: 'i1' }, 'notes'] })).toBe(
      '"notes" is not set',
    );
    expect(refused(base(), { kind: 'remove', path: ['members', 3] })).toBe('index 3 is out of range');
    expect(refused(base(), { kind: 'remove', path: ['days', { id: 'gone' }] })).toBe('no item with id "gone"');
    expect(refused(base(), { kind: 'remove', path: [] })).toBe('the path must not be empty');
  });
});

describe('applyOp: immutability and structural sharing', () => {
  it('never mutates the state it is given (the input is deep-frozen)', () => {
    const state = base();
    const before = JSON.stringify(state);
    ok(state, { kind: 'set', path: ['days', { id: 'd1' }, 'items', { id: 'i1' }, 'title'], value: 'x' });
    ok(state, { kind: 'insert', path: ['days', 0, 'items'], index: 0, value: item('z') });
    ok(state, { kind: 'remove', path: ['members', 1] });
    expect(JSON.stringify(state)).toBe(before);
  });

  it('copies only the containers along the path and shares everything else', () => {
    const state = base();
    const next = ok(state, {
      kind: 'set',
      path: ['days', { id: 'd1' }, 'items', { id: 'i2' }, 'title'],
      value: 'Dinner',
    }).state;
    expect(next).not.toBe(state);
    expect(next.days).not.toBe(state.days);
    expect(next.days[0]).not.toBe(state.days[0]);
    expect(next.days[0].items[1]).not.toBe(state.days[0].items[1]);
    expect(next.days[0].items[0]).toBe(state.days[0].items[0]);
    expect(next.days[1]).toBe(state.days[1]);
    expect(next.members).toBe(state.members);
    expect(next.budget).toBe(state.budget);
    expect(next.dates).toBe(state.dates);
  });

  it('produces a state that validates after each kind of op', () => {
    const ops: Op[] = [
      { kind: 'set', path: ['title'], value: 'x' },
      { kind: 'insert', path: ['days'], index: 1, value: day('dx', [item('a')], null) },
      { kind: 'remove', path: ['days', { id: 'd1' }] },
      { kind: 'insert', path: ['budget', 'items'], value: { id: 'b2', label: 'Food', amount: 0 } },
      { kind: 'set', path: ['budget', 'items', { id: 'b1' }, 'amount'], value: 12.5 },
    ];
    for (const op of ops) expect(validate(schema, ok(base(), op).state), JSON.stringify(op)).toBeNull();
  });
});

describe('claimedPath', () => {
  it('claims the path of a set', () => {
    expect(claimedPath(schema, { kind: 'set', path: ['days', 0, 'date'], value: null })).toEqual(['days', 0, 'date']);
  });

  it('claims the new item by id for an insert into a keyed array', () => {
    expect(claimedPath(schema, { kind: 'insert', path: ['days'], index: 0, value: day('d9') })).toEqual([
      'days',
      { id: 'd9' },
    ]);
    expect(claimedPath(schema, { kind: 'insert', path: ['days', 2, 'items'], value: item('x') })).toEqual([
      'days',
      2,
      'items',
      { id: 'x' },
    ]);
  });

  it('claims the whole array for an insert of an item without a valid id', () => {
    expect(claimedPath(schema, { kind: 'insert', path: ['days'], value: { items: [] } })).toEqual(['days']);
  });

  it('claims the whole array for an insert or remove in an array of plain values', () => {
    expect(claimedPath(schema, { kind: 'insert', path: ['members'], index: 0, value: 'x' })).toEqual(['members']);
    expect(claimedPath(schema, { kind: 'remove', path: ['members', 2] })).toEqual(['members']);
  });

  it('claims the item itself for a remove in a keyed array, by id or by index', () => {
    expect(claimedPath(schema, { kind: 'remove', path: ['days', { id: 'd1' }] })).toEqual(['days', { id: 'd1' }]);
    expect(claimedPath(schema, { kind: 'remove', path: ['days', 1] })).toEqual(['days', 1]);
  });

  it('claims the field for a remove of an optional field', () => {
    expect(claimedPath(schema, { kind: 'remove', path: ['days', 0, 'date'] })).toEqual(['days', 0, 'date']);
  });

  it('claims a set of a plain value by its index (a set does not shift indexes)', () => {
    expect(claimedPath(schema, { kind: 'set', path: ['members', 2], value: 'x' })).toEqual(['members', 2]);
  });
});

describe('overlaps', () => {
  it('is true when one path is a prefix of the other', () => {
    expect(overlaps(['days'], ['days', { id: 'd1' }, 'date'])).toBe(true);
    expect(overlaps(['days', { id: 'd1' }, 'date'], ['days'])).toBe(true);
    expect(overlaps([], ['title'])).toBe(true);
    expect(overlaps(['title'], ['title'])).toBe(true);
  });

  it('is false for sibling fields and for different ids', () => {
    expect(overlaps(['dates', 'start'], ['dates', 'end'])).toBe(false);
    expect(overlaps(['days', { id: 'd1' }], ['days', { id: 'd2' }, 'date'])).toBe(false);
    expect(overlaps(['title'], ['members'])).toBe(false);
  });

  it('assumes an index and an id in the same array may name the same item', () => {
    expect(overlaps(['days', 0, 'date'], ['days', { id: 'd7' }])).toBe(true);
    expect(overlaps(['days', { id: 'd7' }], ['days', 3])).toBe(true);
  });

  it('compares indexes by value', () => {
    expect(overlaps(['members', 1], ['members', 1])).toBe(true);
    expect(overlaps(['members', 1], ['members', 2])).toBe(false);
  });

  it('does not confuse a field name with an id of the same spelling', () => {
    expect(overlaps(['days', 'd1'], ['days', { id: 'd1' }])).toBe(false);
  });
});

describe('schemaAt', () => {
  it('follows fields and array items down to a schema', () => {
    expect(schemaAt(schema, ['days', 0, 'items', { id: 'x' }, 'time'])).toMatchObject({ kind: 'string', max: 5 });
    expect(schemaAt(schema, [])).toBe(schema);
  });

  it('is undefined for a path that leads nowhere', () => {
    expect(schemaAt(schema, ['nope'])).toBeUndefined();
    expect(schemaAt(schema, ['title', 'x'])).toBeUndefined();
    expect(schemaAt(schema, [0])).toBeUndefined();
  });
});
