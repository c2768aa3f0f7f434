/**
 * The landing page (`GET /`): sign in with a token (pasted, or from `/#token=<jwt>`; kept in
 * this tab's sessionStorage, never sent in a URL query), create a trip, and open the trips
 * this browser has opened before. A trip created here opens at `/miniapp/<id>`, which uses the
 * same token.
 */
import { addForm, button, card, h, input } from './dom.ts';
import { callApi, keepLandingToken, knownTrips, landingToken, rememberTrip, tokenFromFragment } from './session.ts';
import { claimsOf, personName } from './words.ts';

function signIn(root: HTMLElement): void {
  const field = h('textarea', {
    'data-testid': 'token-input',
    'aria-label': 'Access token',
    rows: '3',
    placeholder: 'eyJhbGciOi…',
  });
  const message = h('p', { class: 'muted', 'data-testid': 'landing-message', role: 'status' });
  const form = addForm(
    [field, h('button', { type: 'submit', 'data-testid': 'token-save', class: 'primary' }, 'Continue')],
    () => {
      const token = field.value.trim();
      const me = claimsOf(token);
      if (!me) {
        message.textContent =
          'That is not an access token: paste the whole token you were given (three parts separated by dots).';
        return false;
      }
      keepLandingToken(token);
      showLanding(root);
      return true;
    },
  );
  root.replaceChildren(
    h('header', { class: 'top' }, h('h1', { class: 'page-title' }, 'Trip planner')),
    card(
      'Sign in',
      h('p', {}, 'Paste the access token you were given. It stays in this tab only and is never put in an address.'),
      form,
      message,
    ),
  );
}

function showLanding(root: HTMLElement): void {
  const token = landingToken();
  const me = token ? claimsOf(token) : null;
  if (!token || !me) {
    signIn(root);
    return;
  }

  const message = h('p', { class: 'muted', 'data-testid': 'landing-message', role: 'status' });
  const title = input('new-trip-title', 'Trip title', { placeholder: 'Lisbon in May', maxlength: '200' });
  const create = addForm(
    [title, h('button', { type: 'submit', 'data-testid': 'create-trip', class: 'primary' }, 'Create trip')],
    async () => {
      const name = title.value.trim();
      try {
        const trip = await callApi<{ id: string; url: string; state: { title: string } }>(
          'POST',
          '/v1/miniapps',
          token,
          { app: 'trip-planner', ...(name ? { title: name } : {}) },
        );
        rememberTrip(me.id, { id: trip.id, title: trip.state.title });
        location.assign(trip.url);
        return true;
      } catch (err) {
        message.textContent = `The trip was not created: ${(err as Error).message}.`;
        return false;
      }
    },
  );
  const trips = knownTrips(me.id);
  const list = trips.length
    ? h(
        'ul',
        { class: 'trips', 'data-testid': 'my-trips' },
        ...trips.map((t) =>
          h('li', {}, h('a', { href: `/miniapp/${encodeURIComponent(t.id)}`, 'data-testid': 'my-trip' }, t.title)),
        ),
      )
    : h('p', { class: 'muted', 'data-testid': 'my-trips' }, 'No trips opened in this browser yet.');
  const signOut = button('Use another token', 'token-forget', () => {
    keepLandingToken(null);
    signIn(root);
  });
  root.replaceChildren(
    h(
      'header',
      { class: 'top' },
      h('h1', { class: 'page-title' }, 'Trip planner'),
      h('div', { class: 'bar' }, h('span', { 'data-testid': 'signed-in-as' }, personName(me.id, me)), signOut),
    ),
    card('New trip', create, message),
    card('Your trips', list),
  );
  document.title = 'Trip planner';
}

/** Starts the landing page in `root`. */
export function landing(root: HTMLElement): void {
  const fromLink = tokenFromFragment();
  if (fromLink) keepLandingToken(fromLink);
  showLanding(root);
}
