/**
 * The page's few DOM helpers: element builders and `reconcile`, which updates a list in place
 * (keyed rows reused and only moved when needed), so an input someone is typing in is never
 * replaced under their cursor.
 */

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  el.append(...children);
  return el;
}

export function button(label: string, testid: string, onClick: () => void, attrs: Record<string, string> = {}) {
  const b = h('button', { type: 'button', 'data-testid': testid, ...attrs }, label);
  b.addEventListener('click', onClick);
  return b;
}

export function removeButton(testid: string, label: string, onClick: () => void) {
  return button('×', testid, onClick, { class: 'icon', title: label, 'aria-label': label });
}

export function input(testid: string, label: string, attrs: Record<string, string> = {}) {
  return h('input', { type: 'text', 'data-testid': testid, 'aria-label': label, ...attrs });
}

/** A form whose submit (its button or Enter) calls `onSubmit`; it is cleared when that returns true. */
export function addForm(children: Node[], onSubmit: () => boolean | Promise<boolean>): HTMLFormElement {
  const form = h('form', { class: 'add' }, ...children);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void Promise.resolve(onSubmit()).then((done) => {
      if (done) form.reset();
    });
  });
  return form;
}

/** A section of the page with its heading. */
export function card(heading: string, ...children: Node[]): HTMLElement {
  return h('section', { class: 'card' }, h('h2', {}, heading), ...children);
}

export function label(words: string): HTMLElement {
  return h('span', { class: 'muted' }, words);
}

export interface Row<T> {
  el: HTMLElement;
  update(item: T, index: number): void;
}

const rowsOf = new WeakMap<HTMLElement, Map<string, Row<unknown>>>();

/** Makes `list`'s children match `items`, reusing each key's element and moving it only when needed. */
export function reconcile<T>(
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
