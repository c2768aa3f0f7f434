/**
 * The sections of the trip (dates, who's going, days and their plans, budget), each built
 * once and then updated in place from the trip's state by `render`.
 */

import { addForm, card, h, input, label, type Row, reconcile, removeButton } from './dom.ts';
import type { Editor, Path } from './editor.ts';
import { addDays, money, newId, type Trip, weekday } from './words.ts';

type Day = Trip['days'][number];
type Item = Day['items'][number];
type BudgetItem = Trip['budget']['items'][number];

export interface Section {
  el: HTMLElement;
  render(trip: Trip): void;
}

export function datesSection(ed: Editor): Section {
  const { bind, show } = ed.fields;
  const dateField = (which: 'start' | 'end', words: string) =>
    bind(input(`dates-${which}`, words, { type: 'date' }), (v, base) => ed.set(['dates', which], v || null, base));
  const start = dateField('start', 'First day');
  const end = dateField('end', 'Last day');
  return {
    el: card('Dates', h('div', { class: 'bar' }, start, label('to'), end)),
    render(t) {
      show(start, t.dates?.start ?? '');
      show(end, t.dates?.end ?? '');
    },
  };
}

export function membersSection(ed: Editor): Section {
  const members = h('ul', { class: 'chips', 'data-testid': 'members' });
  const newMember = input('new-member', 'New member', { placeholder: 'Name', maxlength: '200' });
  const form = addForm([newMember, h('button', { type: 'submit', 'data-testid': 'add-member' }, 'Add member')], () => {
    const name = newMember.value.trim();
    if (!name) return false;
    if (!ed.trip().members.includes(name)) return ed.edit({ kind: 'insert', path: ['members'], value: name });
    ed.refuse(`${name} is already a member.`);
    return false;
  });
  const memberRow = (name: string, i: number): Row<string> => ({
    el: h(
      'li',
      { 'data-testid': 'member' },
      name,
      removeButton('remove-member', `Remove ${name}`, () => ed.edit({ kind: 'remove', path: ['members', i] })),
    ),
    update() {},
  });
  return {
    el: card('Who’s going', members, form),
    render(t) {
      reconcile(members, t.members, (m, i) => `${i}:${m}`, memberRow);
    },
  };
}

export function daysSection(ed: Editor): Section {
  const { bind, show } = ed.fields;
  const days = h('div', { 'data-testid': 'days' });
  const addDay = h('button', { type: 'button', 'data-testid': 'add-day', class: 'primary' }, 'Add day');
  addDay.addEventListener('click', () => {
    const t = ed.trip();
    const lastDate = [...t.days].reverse().find((d) => d.date)?.date;
    const date = lastDate ? addDays(lastDate, 1) : (t.dates?.start ?? null);
    ed.edit({ kind: 'insert', path: ['days'], value: { id: newId('d'), date, items: [] } });
  });

  function itemRow(path: Path): Row<Item> {
    const time = bind(input('item-time', 'Time', { type: 'time' }), (v, base) =>
      ed.set([...path, 'time'], v || null, base),
    );
    const what = bind(input('item-title', 'Plan', { maxlength: '200' }), ed.text([...path, 'title'], 'A plan'));
    const notes = bind(
      h('textarea', {
        'data-testid': 'item-notes',
        'aria-label': 'Notes',
        placeholder: 'Notes',
        rows: '1',
        maxlength: '2000',
      }),
      (v, base) => ed.set([...path, 'notes'], v, base),
    );
    const remove = removeButton('remove-item', 'Remove this plan', () => ed.edit({ kind: 'remove', path }));
    return {
      el: h('li', { class: 'item', 'data-testid': 'item' }, time, what, remove, notes),
      update(it) {
        show(time, it.time ?? '');
        show(what, it.title);
        show(notes, it.notes ?? '');
      },
    };
  }

  function dayRow(day: Day): Row<Day> {
    const path: Path = ['days', { id: day.id }];
    const heading = h('h3');
    const dow = label('');
    const date = bind(input('day-date', 'Date', { type: 'date' }), (v, base) =>
      ed.set([...path, 'date'], v || null, base),
    );
    const items = h('ol', { class: 'items' });
    const time = input('new-item-time', 'Time', { type: 'time' });
    const what = input('new-item-title', 'New plan', { placeholder: 'Add a plan…', maxlength: '200' });
    const form = addForm([time, what, h('button', { type: 'submit', 'data-testid': 'add-item' }, 'Add')], () => {
      if (!what.value.trim()) return false;
      const item = { id: newId('i'), time: time.value || null, title: what.value.trim() };
      return ed.edit({ kind: 'insert', path: [...path, 'items'], value: item });
    });
    const remove = removeButton('remove-day', 'Remove this day', () => ed.edit({ kind: 'remove', path }));
    const bar = h('div', { class: 'bar' }, heading, date, dow, h('span', { class: 'grow' }), remove);
    return {
      el: h('article', { class: 'day', 'data-testid': 'day' }, bar, items, form),
      update(d, i) {
        heading.textContent = `Day ${i + 1}`;
        show(date, d.date ?? '');
        dow.textContent = weekday(d.date);
        reconcile(
          items,
          d.items,
          (it) => it.id,
          (it) => itemRow([...path, 'items', { id: it.id }]),
        );
      },
    };
  }

  return {
    el: card('Days', days, addDay),
    render(t) {
      reconcile(days, t.days, (d) => d.id, dayRow);
    },
  };
}

export function budgetSection(ed: Editor): Section {
  const { bind, show } = ed.fields;
  const currency = bind(input('currency', 'Currency', { class: 'currency', maxlength: '3' }), (v, base) => {
    const code = v.trim().toUpperCase();
    if (/^[A-Z]{3}$/.test(code)) ed.set(['budget', 'currency'], code, base);
    else ed.refuse('A currency is a three-letter code such as EUR or USD.');
  });
  const rows = h('tbody', { 'data-testid': 'budget-items' });
  const total = h('td', { class: 'total', colspan: '3', 'data-testid': 'budget-total' });
  const newLabel = input('new-budget-label', 'Budget line', { placeholder: 'What for', maxlength: '200' });
  const newAmount = input('new-budget-amount', 'Amount', {
    type: 'number',
    placeholder: 'Amount',
    min: '0',
    step: '0.01',
  });
  const form = addForm(
    [newLabel, newAmount, h('button', { type: 'submit', 'data-testid': 'add-budget-item' }, 'Add')],
    () => {
      const line = { id: newId('b'), label: newLabel.value.trim(), amount: Number(newAmount.value || 0) };
      if (!line.label || !(line.amount >= 0)) return false;
      return ed.edit({ kind: 'insert', path: ['budget', 'items'], value: line });
    },
  );

  function budgetRow(line: BudgetItem): Row<BudgetItem> {
    const path: Path = ['budget', 'items', { id: line.id }];
    const name = bind(
      input('budget-label', 'Budget line', { maxlength: '200' }),
      ed.text([...path, 'label'], 'A budget line'),
    );
    const amount = bind(input('budget-amount', 'Amount', { type: 'number', min: '0', step: '0.01' }), (v, base) =>
      v !== '' && Number(v) >= 0
        ? ed.set([...path, 'amount'], Number(v), base)
        : ed.refuse('An amount is a number, 0 or more.'),
    );
    const remove = removeButton('remove-budget-item', 'Remove this line', () => ed.edit({ kind: 'remove', path }));
    return {
      el: h(
        'tr',
        { 'data-testid': 'budget-item' },
        h('td', {}, name),
        h('td', { class: 'amount' }, amount),
        h('td', {}, remove),
      ),
      update(b) {
        show(name, b.label);
        show(amount, String(b.amount));
      },
    };
  }

  return {
    el: card(
      'Budget',
      h('div', { class: 'bar' }, label('Currency'), currency),
      h('table', {}, rows, h('tfoot', {}, h('tr', {}, total))),
      form,
    ),
    render(t) {
      reconcile(rows, t.budget.items, (b) => b.id, budgetRow);
      show(currency, t.budget.currency);
      total.textContent = `Total ${money(
        t.budget.items.reduce((sum, b) => sum + b.amount, 0),
        t.budget.currency,
      )}`;
    },
  };
}
