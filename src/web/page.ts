/**
 * The trip-planner page (`GET /miniapp/:id`), bundled for the browser by `miniappPage.ts`.
 *
 * Plain DOM, no framework. The planner is built once, then updated in place from
 * `client.view` on every `change` (lists are keyed by item id), so an input someone is
 * typing in keeps its text. A field is committed on change, blur or Enter, as one op.
 * The token comes from the URL fragment (`#token=<jwt>`), which never reaches the server; it
 * is moved to this tab's sessionStorage and cleared from the address bar, so a reload still
 * works but the token does not stay in the visible URL or the history.
 */
import type { TripPlannerState } from '../../actors/apps/tripPlanner.ts';
import { type ClientStatus, type ConflictEvent, MiniappClient, type Op } from '../client/MiniappClient.ts';

type Trip = TripPlannerState;
type Day = Trip['days'][number];
type Item = Day['items'][number];
type BudgetItem = Trip['budget']['items'][number];
type Path = Op['path'];
type Field = HTMLInputElement | HTMLTextAreaElement;

// ---------------------------------------------------------------- DOM helpers

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  el.append(...children);
  return el;
}

function button(label: string, testid: string, onClick: () => void, attrs: Record<string, string> = {}) {
  const b = h('button', { type: 'button', 'data-testid': testid, ...attrs }, label);
  b.addEventListener('click', onClick);
  return b;
}

function removeButton(testid: string, label: string, onClick: () => void) {
  return button('×', testid, onClick, { class: 'icon', title: label, 'aria-label': label });
}

function input(testid: string, label: string, attrs: Record<string, string> = {}) {
  return h('input', { type: 'text', 'data-testid': testid, 'aria-label': label, ...attrs });
}

/** A form whose submit (its button or Enter) calls `onSubmit`; it is cleared when that returns true. */
function addForm(children: Node[], onSubmit: () => boolean): HTMLFormElement {
  const form = h('form', { class: 'add' }, ...children);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (onSubmit()) form.reset();
  });
  return form;
}

/** What each field last showed from the state or committed; a focused field holding anything else is unsaved typing. */
const shown = new WeakMap<Field, string>();

function show(field: Field, value: string): void {
  if (document.activeElement === field && field.value !== shown.get(field)) return;
  if (field.value !== value) field.value = value;
  shown.set(field, value);
}

/** Commits the field on change, blur or Enter (one op); Escape brings back the saved value. */
function bind<F extends Field>(field: F, commit: (value: string) => void): F {
  const save = () => {
    if (field.value === shown.get(field)) return;
    shown.set(field, field.value);
    commit(field.value);
  };
  field.addEventListener('change', save);
  field.addEventListener('keydown', (e) => {
    const key = (e as KeyboardEvent).key;
    if (key === 'Enter' && field instanceof HTMLInputElement) save();
    if (key === 'Escape') field.value = shown.get(field) ?? '';
  });
  return field;
}

interface Row<T> {
  el: HTMLElement;
  update(item: T, index: number): void;
}

const rowsOf = new WeakMap<HTMLElement, Map<string, Row<unknown>>>();

/** Makes `list`'s children match `items`, reusing each key's element and moving it only when needed. */
function reconcile<T>(
  list: HTMLElement,
  items: T[],
  key: (item: T, i: number) => string,
  create: (item: T, i: number) => Row<T>,
) {
  const old = (rowsOf.get(list) ?? new Map()) as Map<string, Row<T>>;
  const next = new Map<string, Row<T>>();
  let cursor = list.firstElementChild;
  items.forEach((item, i) => {
    const k = key(item, i);
    const row = old.get(k) ?? create(item, i);
    old.delete(k);
    next.set(k, row);
    row.update(item, i);
    if (row.el === cursor) cursor = cursor.nextElementSibling;
    else list.insertBefore(row.el, cursor);
  });
  for (const row of old.values()) row.el.remove();
  rowsOf.set(list, next as Map<string, Row<unknown>>);
}

// ---------------------------------------------------------------- words and values

function newId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function addDays(iso: string, n: number): string {
  const d = new Date(`${iso}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function weekday(iso: string | null | undefined): string {
  return iso ? new Date(`${iso}T00:00:00Z`).toLocaleDateString(undefined, { weekday: 'short', timeZone: 'UTC' }) : '';
}

function money(amount: number, currency: string): string {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(amount);
  } catch {
    return `${amount.toFixed(2)} ${currency}`;
  }
}

/** The token's `sub`, to mark "you" (display only: the server is the one that verifies the token). */
function subjectOf(jwt: string): string | null {
  try {
    const b64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const sub = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

/** Says in words which field an op edits, e.g. "the date of day 2". */
function describeField(op: Op, trip: Trip): string {
  const [top, a, b, , field] = op.path;
  const n = trip.days.findIndex((d) => typeof a === 'object' && d.id === a.id);
  const day = n >= 0 ? `day ${n + 1}` : 'a day that was removed';
  if (top === 'title') return 'the trip title';
  if (top === 'dates') return a === 'start' ? 'the start date' : a === 'end' ? 'the end date' : 'the trip dates';
  if (top === 'members') return 'the members';
  if (top === 'budget') return a === 'currency' ? 'the currency' : `the ${String(op.path[3] ?? 'lines')} of the budget`;
  if (top !== 'days') return 'the trip';
  if (a === undefined) return 'the days';
  if (b === 'date') return `the date of ${day}`;
  if (b === 'items') return field ? `the ${String(field)} of a plan on ${day}` : `the plans of ${day}`;
  return day;
}

function describeValue(op: Op): string {
  if (op.kind === 'remove') return 'remove it';
  const v = op.value as { title?: string; label?: string } | string | number | null;
  if (v === null || v === '') return '(empty)';
  if (typeof v === 'object') return v.title ?? v.label ?? 'a new entry';
  return String(v);
}

const STATUS_TEXT: Record<ClientStatus, string> = {
  connecting: 'Connecting…',
  open: 'Live',
  reconnecting: 'Reconnecting…',
  closed: 'Offline',
};

// ---------------------------------------------------------------- the planner

interface Planner {
  render(trip: Trip): void;
  status(status: ClientStatus, code?: number, reason?: string): void;
  online(users: string[]): void;
  conflict(event: ConflictEvent): void;
  /** A non-blocking message; it goes away after a while unless `sticky`. */
  error(message: string, sticky?: boolean): void;
}

function createPlanner(root: HTMLElement, client: MiniappClient, me: string | null): Planner {
  const trip = () => client.view as Trip;
  /** Explains why an edit was not made and puts the fields back to the state. */
  const refuse = (message: string) => {
    planner.error(message);
    planner.render(trip());
  };
  const edit = (op: Op): boolean => {
    try {
      client.apply(op);
      return true;
    } catch (err) {
      refuse(`That change was not saved: ${(err as Error).message}.`);
      return false;
    }
  };
  const set = (path: Path, value: unknown) => edit({ kind: 'set', path, value });
  const text = (path: Path, what: string) => (v: string) =>
    v.trim() ? set(path, v.trim()) : refuse(`${what} can’t be empty.`);

  const title = bind(
    input('title-input', 'Trip title', { class: 'title', maxlength: '200' }),
    text(['title'], 'The title'),
  );
  const statusEl = h('span', { class: 'status', 'data-testid': 'status', role: 'status' });
  const online = h('ul', { class: 'online', 'data-testid': 'online', 'aria-label': 'Online now' });
  const banners = h('div', { 'aria-live': 'polite' });
  const errorText = h('p', { 'data-testid': 'error-text' });
  const errorBox = h(
    'div',
    { class: 'banner error', 'data-testid': 'error-message', role: 'alert' },
    h('div', { class: 'grow' }, errorText),
  );
  errorBox.append(button('Dismiss', 'dismiss-error', () => errorBox.remove()));
  let errorTimer: ReturnType<typeof setTimeout> | undefined;

  const dateField = (which: 'start' | 'end', label: string) =>
    bind(input(`dates-${which}`, label, { type: 'date' }), (v) => set(['dates', which], v || null));
  const start = dateField('start', 'First day');
  const end = dateField('end', 'Last day');

  const members = h('ul', { class: 'chips', 'data-testid': 'members' });
  const newMember = input('new-member', 'New member', { placeholder: 'Name', maxlength: '200' });
  const memberForm = addForm(
    [newMember, h('button', { type: 'submit', 'data-testid': 'add-member' }, 'Add member')],
    () => {
      const name = newMember.value.trim();
      if (!name) return false;
      if (!trip().members.includes(name)) return edit({ kind: 'insert', path: ['members'], value: name });
      refuse(`${name} is already a member.`);
      return false;
    },
  );

  const days = h('div', { 'data-testid': 'days' });
  const addDay = button(
    'Add day',
    'add-day',
    () => {
      const t = trip();
      const lastDate = [...t.days].reverse().find((d) => d.date)?.date;
      const date = lastDate ? addDays(lastDate, 1) : (t.dates?.start ?? null);
      edit({ kind: 'insert', path: ['days'], value: { id: newId('d'), date, items: [] } });
    },
    { class: 'primary' },
  );

  const currency = bind(input('currency', 'Currency', { class: 'currency', maxlength: '3' }), (v) => {
    const code = v.trim().toUpperCase();
    if (/^[A-Z]{3}$/.test(code)) set(['budget', 'currency'], code);
    else refuse('A currency is a three-letter code such as EUR or USD.');
  });
  const budgetRows = h('tbody', { 'data-testid': 'budget-items' });
  const total = h('td', { class: 'total', colspan: '3', 'data-testid': 'budget-total' });
  const newLabel = input('new-budget-label', 'Budget line', { placeholder: 'What for', maxlength: '200' });
  const newAmount = input('new-budget-amount', 'Amount', {
    type: 'number',
    placeholder: 'Amount',
    min: '0',
    step: '0.01',
  });
  const budgetForm = addForm(
    [newLabel, newAmount, h('button', { type: 'submit', 'data-testid': 'add-budget-item' }, 'Add')],
    () => {
      const line = { id: newId('b'), label: newLabel.value.trim(), amount: Number(newAmount.value || 0) };
      if (!line.label || !(line.amount >= 0)) return false;
      return edit({ kind: 'insert', path: ['budget', 'items'], value: line });
    },
  );

  const card = (heading: string, ...children: Node[]) =>
    h('section', { class: 'card' }, h('h2', {}, heading), ...children);
  const label = (words: string) => h('span', { class: 'muted' }, words);
  const main = h(
    'main',
    {},
    card('Dates', h('div', { class: 'bar' }, start, label('to'), end)),
    card('Who’s going', members, memberForm),
    card('Days', days, addDay),
    card(
      'Budget',
      h('div', { class: 'bar' }, label('Currency'), currency),
      h('table', {}, budgetRows, h('tfoot', {}, h('tr', {}, total))),
      budgetForm,
    ),
  );
  root.replaceChildren(
    h('header', { class: 'top' }, title, h('div', { class: 'bar' }, online, statusEl)),
    banners,
    main,
  );

  function dayRow(day: Day): Row<Day> {
    const path: Path = ['days', { id: day.id }];
    const heading = h('h3');
    const dow = label('');
    const date = bind(input('day-date', 'Date', { type: 'date' }), (v) => set([...path, 'date'], v || null));
    const items = h('ol', { class: 'items' });
    const time = input('new-item-time', 'Time', { type: 'time' });
    const what = input('new-item-title', 'New plan', { placeholder: 'Add a plan…', maxlength: '200' });
    const form = addForm([time, what, h('button', { type: 'submit', 'data-testid': 'add-item' }, 'Add')], () => {
      if (!what.value.trim()) return false;
      const item = { id: newId('i'), time: time.value || null, title: what.value.trim() };
      return edit({ kind: 'insert', path: [...path, 'items'], value: item });
    });
    const remove = removeButton('remove-day', 'Remove this day', () => edit({ kind: 'remove', path }));
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

  function itemRow(path: Path): Row<Item> {
    const time = bind(input('item-time', 'Time', { type: 'time' }), (v) => set([...path, 'time'], v || null));
    const what = bind(input('item-title', 'Plan', { maxlength: '200' }), text([...path, 'title'], 'A plan'));
    const notes = bind(
      h('textarea', {
        'data-testid': 'item-notes',
        'aria-label': 'Notes',
        placeholder: 'Notes',
        rows: '1',
        maxlength: '2000',
      }),
      (v) => set([...path, 'notes'], v),
    );
    const remove = removeButton('remove-item', 'Remove this plan', () => edit({ kind: 'remove', path }));
    return {
      el: h('li', { class: 'item', 'data-testid': 'item' }, time, what, remove, notes),
      update(it) {
        show(time, it.time ?? '');
        show(what, it.title);
        show(notes, it.notes ?? '');
      },
    };
  }

  function budgetRow(line: BudgetItem): Row<BudgetItem> {
    const path: Path = ['budget', 'items', { id: line.id }];
    const name = bind(
      input('budget-label', 'Budget line', { maxlength: '200' }),
      text([...path, 'label'], 'A budget line'),
    );
    const amount = bind(input('budget-amount', 'Amount', { type: 'number', min: '0', step: '0.01' }), (v) =>
      v !== '' && Number(v) >= 0 ? set([...path, 'amount'], Number(v)) : refuse('An amount is a number, 0 or more.'),
    );
    const remove = removeButton('remove-budget-item', 'Remove this line', () => edit({ kind: 'remove', path }));
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

  function memberRow(name: string, i: number): Row<string> {
    const remove = removeButton('remove-member', `Remove ${name}`, () =>
      edit({ kind: 'remove', path: ['members', i] }),
    );
    return { el: h('li', { 'data-testid': 'member' }, name, remove), update() {} };
  }

  function conflictCard({ edit: lost, ops, unconfirmed }: ConflictEvent): HTMLElement {
    const by = [...new Set(ops.map((o) => (o.by === me ? 'you, in another window,' : o.by)))];
    const what = describeField(lost.op, trip());
    const [headline, why] = unconfirmed
      ? [`Your change to ${what} may not have been saved.`, 'The connection dropped before it was confirmed.']
      : [`Your change to ${what} was not saved.`, `${by.join(' and ') || 'Someone else'} changed it first.`];
    const note = h('p', { class: 'muted' });
    const reapply = () => {
      try {
        client.apply(lost.op);
        el.remove();
      } catch (err) {
        note.textContent = `It can’t be re-applied: ${(err as Error).message}.`;
      }
    };
    const el = h(
      'div',
      { class: 'banner conflict', 'data-testid': 'conflict', role: 'alert' },
      h(
        'div',
        { class: 'grow' },
        h('p', {}, h('strong', {}, headline), ` ${why}`),
        h('p', {}, 'Your version: ', h('q', { 'data-testid': 'conflict-mine' }, describeValue(lost.op))),
        note,
        h(
          'div',
          { class: 'actions' },
          button('Re-apply my edit', 'reapply', reapply, { class: 'primary' }),
          button('Dismiss', 'dismiss-conflict', () => el.remove()),
        ),
      ),
    );
    return el;
  }

  function renderOnline(users: string[]): void {
    reconcile(
      online,
      users,
      (u) => u,
      (u) => ({ el: h('li', { 'data-testid': 'online-user' }, u === me ? `${u} (you)` : u), update() {} }),
    );
  }

  const planner: Planner = {
    render(t) {
      show(title, t.title);
      document.title = `${t.title} · Trip planner`;
      show(start, t.dates?.start ?? '');
      show(end, t.dates?.end ?? '');
      reconcile(members, t.members, (m, i) => `${i}:${m}`, memberRow);
      reconcile(days, t.days, (d) => d.id, dayRow);
      reconcile(budgetRows, t.budget.items, (b) => b.id, budgetRow);
      show(currency, t.budget.currency);
      total.textContent = `Total ${money(
        t.budget.items.reduce((sum, b) => sum + b.amount, 0),
        t.budget.currency,
      )}`;
      renderOnline(client.online);
    },
    status(status, code, reason) {
      statusEl.dataset.status = status;
      statusEl.textContent = STATUS_TEXT[status];
      if (status !== 'closed' || code === undefined) return;
      main.inert = true;
      title.disabled = true;
      const why =
        code === 1008
          ? 'Your access to this trip has expired. Open it again from a fresh link; your saved changes are kept.'
          : `The connection was closed${reason ? ` (${reason})` : ''}. Reload the page to reconnect.`;
      planner.error(why, true);
    },
    online: renderOnline,
    conflict(event) {
      banners.append(conflictCard(event));
    },
    error(message, sticky = false) {
      errorText.textContent = message;
      banners.prepend(errorBox);
      clearTimeout(errorTimer);
      if (!sticky) errorTimer = setTimeout(() => errorBox.remove(), 10_000);
    },
  };
  planner.status(client.status);
  return planner;
}

// ---------------------------------------------------------------- start

function notice(root: HTMLElement, heading: string, text: string, retry?: () => void): void {
  const box = h(
    'div',
    { class: 'notice', 'data-testid': 'fatal', role: 'alert' },
    h('h1', {}, heading),
    h('p', { class: 'muted' }, text),
  );
  if (retry) box.append(button('Try again', 'retry', retry, { class: 'primary' }));
  root.replaceChildren(box);
}

/** The token from the link's fragment (then cleared from the address bar), or from this tab's earlier visit. */
function takeToken(sessionId: string): string | null {
  const key = `archety.token.${sessionId}`;
  const fromLink = new URLSearchParams(location.hash.slice(1)).get('token');
  if (!fromLink) return sessionStorage.getItem(key);
  sessionStorage.setItem(key, fromLink);
  history.replaceState(null, '', location.pathname + location.search);
  return fromLink;
}

function open(root: HTMLElement, sessionId: string, token: string): void {
  root.replaceChildren(h('p', { class: 'notice' }, 'Loading the trip…'));
  const client = new MiniappClient({ baseUrl: location.origin, sessionId, token });
  let planner: Planner | null = null;
  let refused = false;
  client.on('status', ({ status, code, reason }) => {
    // A socket that closes before any snapshot was refused (browsers do not show the HTTP status).
    if (client.version < 0 && (status === 'reconnecting' || status === 'closed')) {
      if (refused) return;
      refused = true;
      client.close();
      notice(
        root,
        'Could not open this trip: access was refused or the link expired.',
        'Ask whoever shared the trip for a new link. If you are offline, check your connection and try again.',
        () => open(root, sessionId, token),
      );
      return;
    }
    planner?.status(status, code, reason);
  });
  client.on('change', ({ view }) => {
    if (view === null) return;
    planner ??= createPlanner(root, client, subjectOf(token));
    planner.render(view as Trip);
  });
  client.on('presence', ({ online }) => planner?.online(online));
  client.on('conflict', (event) => planner?.conflict(event));
  // Edits refused only for now (rate_limited, db_unavailable…) are retried by the SDK and never reach here.
  client.on('error', ({ message, edit }) => planner?.error(edit ? `That change was not saved: ${message}` : message));
}

function boot(): void {
  const root = document.getElementById('app');
  if (!root) return;
  const match = /^\/miniapp\/([^/]+)\/?$/.exec(location.pathname);
  const sessionId = match ? decodeURIComponent(match[1]) : '';
  const token = sessionId ? takeToken(sessionId) : null;
  if (!sessionId) notice(root, 'There is no trip at this address.', 'Open the trip from the link you were sent.');
  else if (token) open(root, sessionId, token);
  else
    notice(
      root,
      'This link has no access token.',
      'Open the trip from the full link you were sent: it ends with “#token=…”. If you no longer have it, ask whoever shared the trip for a new one.',
    );
}

boot();
