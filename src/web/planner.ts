/**
 * The trip planner once the trip is open: the header (title, who is online, connection
 * status), the banners (errors, conflict cards) and the trip's sections. Built once, then
 * updated in place from `client.view` on every `change`, so a field someone is typing in
 * keeps its text.
 */
import { CloseCodes } from '../../actors/closeCodes.ts';
import type { ClientStatus, ConflictEvent, MiniappClient } from '../client/MiniappClient.ts';
import { conflictCard } from './conflictCard.ts';
import { button, h, reconcile } from './dom.ts';
import { createEditor } from './editor.ts';
import { budgetSection, datesSection, daysSection, membersSection, type Section } from './tripSections.ts';
import { type Me, personName, STATUS_TEXT, type Trip } from './words.ts';

export interface Planner {
  render(trip: Trip): void;
  status(status: ClientStatus, code?: number, reason?: string): void;
  online(users: string[]): void;
  conflict(event: ConflictEvent): void;
  /** A non-blocking message; it goes away after a while unless `sticky`. */
  error(message: string, sticky?: boolean): void;
}

/** `extra` sections (e.g. sharing) follow the trip's own. */
export function createPlanner(root: HTMLElement, client: MiniappClient, me: Me | null, extra: Section[] = []): Planner {
  const ed = createEditor(client, (message) => {
    planner.error(message);
    planner.render(ed.trip());
  });
  const title = ed.fields.bind(
    h('input', {
      type: 'text',
      'data-testid': 'title-input',
      'aria-label': 'Trip title',
      class: 'title',
      maxlength: '200',
    }),
    ed.text(['title'], 'The title'),
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

  const sections = [datesSection(ed), membersSection(ed), daysSection(ed), budgetSection(ed), ...extra];
  const main = h('main', {}, ...sections.map((s) => s.el));
  root.replaceChildren(
    h('header', { class: 'top' }, title, h('div', { class: 'bar' }, online, statusEl)),
    banners,
    main,
  );

  function renderOnline(users: string[]): void {
    reconcile(
      online,
      users,
      (u) => u,
      (u) => ({
        el: h('li', { 'data-testid': 'online-user', title: u }, u === me?.id ? `${personName(u, me)} (you)` : u),
        update() {},
      }),
    );
  }

  const planner: Planner = {
    render(t) {
      ed.fields.show(title, t.title);
      document.title = `${t.title} · Trip planner`;
      for (const s of sections) s.render(t);
      renderOnline(client.online);
    },
    status(status, code, reason) {
      statusEl.dataset.status = status;
      statusEl.textContent = STATUS_TEXT[status];
      if (status !== 'closed' || code === undefined) return;
      main.inert = true;
      title.disabled = true;
      const why =
        code === CloseCodes.policyViolation
          ? 'Your access to this trip has expired. Open it again from a fresh link; your saved changes are kept.'
          : `The connection was closed${reason ? ` (${reason})` : ''}. Reload the page to reconnect.`;
      planner.error(why, true);
    },
    online: renderOnline,
    conflict(event) {
      banners.append(conflictCard(event, client, me));
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
