/**
 * The browser script of the pages, bundled by `miniappPage.ts`: the landing page at `/`
 * (`landing.ts`) and the trip-planner page at `/miniapp/:id`, which finds the token, opens the
 * trip with the client SDK and hands it to the planner (`planner.ts`). Plain DOM, no framework.
 *
 * The token comes from the URL fragment (`#token=<jwt>`), which never reaches the server; it
 * is moved to this tab's sessionStorage and cleared from the address bar, so a reload still
 * works but the token does not stay in the visible URL or the history. The page's share
 * section gives the address to copy instead.
 */
import { MiniappClient } from '../client/MiniappClient.ts';
import { button, h } from './dom.ts';
import { landing } from './landing.ts';
import { createPlanner, type Planner } from './planner.ts';
import { rememberTrip, takeTripToken } from './session.ts';
import { sharePanel } from './sharePanel.ts';
import { claimsOf, type Trip } from './words.ts';

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
  const me = claimsOf(token);
  let title = '';
  client.on('change', ({ view }) => {
    if (view === null) return;
    planner ??= createPlanner(root, client, me, [sharePanel({ client, sessionId, token, me })]);
    planner.render(view as Trip);
    // The landing page lists the trips opened in this browser (not share links: they open one trip only).
    if (me && !me.sid && (view as Trip).title !== title) {
      title = (view as Trip).title;
      rememberTrip(me.id, { id: sessionId, title });
    }
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
  if (location.pathname === '/') {
    landing(root);
    return;
  }
  const token = sessionId ? takeTripToken(sessionId) : null;
  if (!sessionId) notice(root, 'There is no trip at this address.', 'Open the trip from the link you were sent.');
  else if (token) open(root, sessionId, token);
  else
    notice(
      root,
      'This link has no access token.',
      'Open the trip from the full link you were sent: it ends with “#token=…”, or sign in on the start page (/) first. If you no longer have it, ask whoever shared the trip for a new one.',
    );
}

boot();
