/**
 * An edit typed while someone else commits the same field is never silently lost: the page
 * takes the base version at the first keystroke, so Enter after someone else's commit is
 * answered `conflict`; the card names only who really changed that field, keeps the person's
 * text to re-apply, and never blames the person's own unrelated edits.
 */
import type { Browser, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.ts';
import { chromiumAvailable, gateMiniappSocket, launchChromium, type SocketGate } from '../helpers/browser.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15550150001';
const BOB = '+15550150002';

const POLL = { timeout: 5_000, interval: 50 };

describe.skipIf(!chromiumAvailable())('edits typed while someone else commits the same field', () => {
  let server: RunningServer;
  let browser: Browser;
  let aliceToken: string;
  let bobToken: string;
  const scriptErrors: string[] = [];

  async function openPage(tripId: string, who: string, jwt: string, o: { gate?: boolean } = {}) {
    const context = await browser.newContext({ locale: 'en-US' });
    const page = await context.newPage();
    page.on('pageerror', (err) => scriptErrors.push(`${who}: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') scriptErrors.push(`${who}: ${msg.text()}`);
    });
    const gate = o.gate ? await gateMiniappSocket(page) : undefined;
    await page.goto(`${server.url}/miniapp/${tripId}#token=${jwt}`);
    await expect.poll(() => page.getByTestId('status').getAttribute('data-status'), POLL).toBe('open');
    return { page, gate };
  }

  /** A new trip of Alice's with Bob in it, open in Alice's page, Bob's page (gated) and Bob's second window. */
  async function openTrip() {
    const tripId = await createTrip(server.url, aliceToken, { participants: [BOB] });
    const alice = (await openPage(tripId, 'alice', aliceToken)).page;
    const { page: bob, gate } = await openPage(tripId, 'bob', bobToken, { gate: true });
    const bobElsewhere = (await openPage(tripId, 'bob, second window', bobToken)).page;
    const serverState = async () =>
      (await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: aliceToken })).body.state;
    return { tripId, alice, bob, bobSocket: gate as SocketGate, bobElsewhere, serverState };
  }

  const value = (page: Page, testid: string) => page.getByTestId(testid).inputValue();

  /** Commits `text` into the field as a person would: type, then Enter. */
  async function commit(page: Page, testid: string, text: string) {
    await page.getByTestId(testid).fill(text);
    await page.getByTestId(testid).press('Enter');
  }

  /** Resolves once `page` has rendered a state whose title is `title` (the tab's title follows the state). */
  const seesTitle = (page: Page, title: string) =>
    expect.poll(() => page.title(), POLL).toBe(`${title} · Trip planner`);

  beforeAll(async () => {
    const db = await createTestDatabase();
    server = await startTestServer(db.url);
    browser = await launchChromium();
    aliceToken = await token(ALICE);
    bobToken = await token(BOB);
  });

  it("answers Enter after someone else's commit with a conflict card naming them, keeps the text, and overwrites nothing", async () => {
    const { alice, bob, bobElsewhere, serverState } = await openTrip();

    await bob.getByTestId('title-input').focus();
    await bob.getByTestId('title-input').fill('Lisbon, as Bob sees it');
    // Bob, in his other window, edits another field meanwhile: it must not be blamed.
    await commit(bobElsewhere, 'dates-start', '2027-05-01');
    await expect.poll(() => value(bob, 'dates-start'), POLL).toBe('2027-05-01');
    await commit(alice, 'title-input', 'Lisbon, as Alice sees it');
    await seesTitle(bob, 'Lisbon, as Alice sees it');
    expect(await value(bob, 'title-input')).toBe('Lisbon, as Bob sees it');

    await bob.getByTestId('title-input').press('Enter');

    const card = bob.getByTestId('conflict');
    await card.waitFor({ timeout: 5_000 });
    const text = (await card.textContent()) ?? '';
    expect(text).toContain('Your change to the trip title was not saved.');
    expect(text).toContain(`${ALICE} changed it first.`);
    expect(text).not.toContain('another window');
    expect(await card.getByTestId('conflict-theirs').allTextContents()).toEqual([`${ALICE}: Lisbon, as Alice sees it`]);
    expect(await card.getByTestId('conflict-mine').textContent()).toBe('Lisbon, as Bob sees it');

    expect((await serverState()).title).toBe('Lisbon, as Alice sees it');
    await expect.poll(() => value(alice, 'title-input'), POLL).toBe('Lisbon, as Alice sees it');
    expect(await alice.getByTestId('conflict').count()).toBe(0);

    await card.getByTestId('reapply').click();
    for (const page of [alice, bob]) await seesTitle(page, 'Lisbon, as Bob sees it');
    expect((await serverState()).title).toBe('Lisbon, as Bob sees it');
  });

  it("does not list the person's own unrelated edit from the same page in the card", async () => {
    const { alice, bob, bobSocket, serverState } = await openTrip();
    // Bob hears nothing from the server, so his own date edit and Alice's title both come
    // after the version his title edit begins from, and both are in the server's conflict frame.
    bobSocket.freeze();
    await commit(bob, 'dates-end', '2027-05-09');
    await expect.poll(async () => (await serverState()).dates.end, POLL).toBe('2027-05-09');
    await bob.getByTestId('title-input').focus();
    await bob.getByTestId('title-input').fill('Porto instead');
    await commit(alice, 'title-input', 'Lisbon and Sintra');
    await expect.poll(() => bobSocket.held().filter((f) => f.type === 'applied').length, POLL).toBe(2);
    await bob.getByTestId('title-input').press('Enter');
    await expect
      .poll(() => bobSocket.held().find((f) => f.type === 'conflict'), POLL)
      .toMatchObject({ ops: [{ by: BOB }, { by: ALICE }] });
    bobSocket.release();

    const card = bob.getByTestId('conflict');
    await card.waitFor({ timeout: 5_000 });
    const text = (await card.textContent()) ?? '';
    expect(text).toContain(`${ALICE} changed it first.`);
    expect(text).not.toContain('another window');
    expect(text).not.toContain(BOB);
    expect(await card.getByTestId('conflict-theirs').allTextContents()).toEqual([`${ALICE}: Lisbon and Sintra`]);
    expect(await card.getByTestId('conflict-mine').textContent()).toBe('Porto instead');
    expect(await serverState()).toMatchObject({ title: 'Lisbon and Sintra', dates: { end: '2027-05-09' } });
  });

  it('says "you, in another window" when the clashing edit was the same person\'s, from another connection', async () => {
    const { alice, bob, bobElsewhere, serverState } = await openTrip();
    await bob.getByTestId('title-input').focus();
    await bob.getByTestId('title-input').fill('Lisbon from the laptop');
    await commit(bobElsewhere, 'title-input', 'Lisbon from the phone');
    await seesTitle(bob, 'Lisbon from the phone');
    await bob.getByTestId('title-input').press('Enter');

    const card = bob.getByTestId('conflict');
    await card.waitFor({ timeout: 5_000 });
    const text = (await card.textContent()) ?? '';
    expect(text).toContain('you, in another window, changed it first.');
    expect(text).not.toContain(ALICE);
    expect(await card.getByTestId('conflict-mine').textContent()).toBe('Lisbon from the laptop');
    expect((await serverState()).title).toBe('Lisbon from the phone');
    expect(await alice.getByTestId('conflict').count()).toBe(0);
  });

  it('applies an edit begun after the other commit arrived, without a conflict', async () => {
    const { alice, bob, serverState } = await openTrip();
    await bob.getByTestId('title-input').focus();
    await commit(alice, 'title-input', 'Lisbon in May');
    // The field was untouched, so it shows Alice's title; Bob's typing begins from it.
    await expect.poll(() => value(bob, 'title-input'), POLL).toBe('Lisbon in May');
    await commit(bob, 'title-input', 'Lisbon in late May');
    await expect.poll(async () => (await serverState()).title, POLL).toBe('Lisbon in late May');
    await seesTitle(alice, 'Lisbon in late May');
    expect(await bob.getByTestId('conflict').count()).toBe(0);
  });

  it('ran without script errors or blocked resources on any page', () => {
    expect(scriptErrors).toEqual([]);
  });
});
