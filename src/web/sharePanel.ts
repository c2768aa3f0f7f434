/**
 * The trip page's "Share" section: who is in the trip (display names where known, else phone
 * numbers), adding a person by phone number (`POST /v1/miniapps/:id/participants`), the trip's
 * address to copy (it carries no token: whoever opens it signs in with their own), and a link
 * anyone can open for 7 days (`POST /v1/miniapps/:id/share-links`, a token with `sid`).
 *
 * A share link's holder (a `sid` token) may do neither, so they see only the address.
 */
import type { MiniappClient } from '../client/MiniappClient.ts';
import { addForm, button, card, h, input, reconcile } from './dom.ts';
import { ApiError, callApi } from './session.ts';
import type { Section } from './tripSections.ts';
import { type Me, personName } from './words.ts';

/** E.164: a plus, then 8 to 15 digits, the first not 0 (spaces, dashes, dots and brackets are ignored). */
export function phoneNumber(text: string): string | null {
  const compact = text.replace(/[\s().-]/g, '');
  return /^\+[1-9]\d{7,14}$/.test(compact) ? compact : null;
}

interface ShareDeps {
  client: MiniappClient;
  sessionId: string;
  token: string;
  me: Me | null;
}

/** A read-only field holding `text` with a button that copies it. */
function copyable(testid: string, labelText: string, text: string): HTMLElement {
  const field = input(testid, labelText, { readonly: '', value: text, class: 'grow' });
  const copy = button('Copy', `${testid}-copy`, () => {
    field.select();
    void navigator.clipboard?.writeText(field.value).then(
      () => {
        copy.textContent = 'Copied';
      },
      () => {
        copy.textContent = 'Press Ctrl+C to copy';
      },
    );
  });
  return h('div', { class: 'bar copy' }, field, copy);
}

export function sharePanel({ client, sessionId, token, me }: ShareDeps): Section {
  const address = `${location.origin}/miniapp/${encodeURIComponent(sessionId)}`;
  const people = h('ul', { class: 'chips', 'data-testid': 'participants', 'aria-label': 'People in this trip' });
  const message = h('p', { class: 'muted', 'data-testid': 'share-message', role: 'status' });
  const links = h('div');
  let participants = client.participants;

  const renderPeople = () =>
    reconcile(
      people,
      participants,
      (u) => u,
      (u) => ({
        el: h('li', { 'data-testid': 'participant', title: u }, u === me?.id ? `${personName(u, me)} (you)` : u),
        update() {},
      }),
    );

  const phone = input('share-phone', 'Phone number', { type: 'tel', placeholder: '+351 912 345 678', maxlength: '40' });
  const add = addForm([phone, h('button', { type: 'submit', 'data-testid': 'share-add' }, 'Add person')], async () => {
    const user = phoneNumber(phone.value);
    if (!user) {
      message.textContent = 'Write the phone number with its country code, e.g. +351 912 345 678.';
      return false;
    }
    try {
      const answer = await callApi<{ participants: string[] }>(
        'POST',
        `/v1/miniapps/${encodeURIComponent(sessionId)}/participants`,
        token,
        { user },
      );
      participants = answer.participants;
      renderPeople();
      message.textContent = `${user} can now open the trip at the address below with their own sign-in.`;
      return true;
    } catch (err) {
      message.textContent = `${user} was not added: ${(err as Error).message}.`;
      return false;
    }
  });

  const makeLink = button('Create a link anyone can open (7 days)', 'share-link-create', async () => {
    makeLink.disabled = true;
    try {
      const answer = await callApi<{ url: string; expiresAt: string }>(
        'POST',
        `/v1/miniapps/${encodeURIComponent(sessionId)}/share-links`,
        token,
      );
      const until = new Date(answer.expiresAt).toLocaleDateString(undefined, { dateStyle: 'medium' });
      links.replaceChildren(
        copyable('share-link', 'Link anyone can open', `${location.origin}${answer.url}`),
        h('p', { class: 'muted' }, `Whoever has this link can open and edit this trip until ${until}.`),
      );
    } catch (err) {
      const why =
        err instanceof ApiError && err.code === 'share_links_unavailable'
          ? 'this server cannot make links'
          : (err as Error).message;
      message.textContent = `No link was made: ${why}.`;
    } finally {
      makeLink.disabled = false;
    }
  });

  const guest = me?.sid !== undefined;
  const el = card(
    'Share',
    people,
    ...(guest ? [] : [add]),
    message,
    h('p', { class: 'muted' }, 'The trip’s address (each person opens it with their own sign-in):'),
    copyable('share-url', 'Trip address', address),
    ...(guest ? [] : [h('div', { class: 'bar' }, makeLink), links]),
  );
  renderPeople();
  return {
    el,
    render() {
      // A reconnect's snapshot may name people others added meanwhile.
      participants = [...new Set([...participants, ...client.participants])];
      renderPeople();
    },
  };
}
