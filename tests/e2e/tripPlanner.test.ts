/**
 * The trip-planner page in a real browser (Debian's Chromium through playwright-core), against
 * a real server and Postgres: two people edit one trip live, one loses a race for the same
 * field and re-applies their text, and links without access say so.
 */
import type { Browser, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.ts';
import { chromiumAvailable, gateMiniappSocket, launchChromium, type SocketGate } from '../helpers/browser.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15550140001';
const BOB = '+15550140002';
const EVE = '+15550140009';

const POLL = { timeout: 5_000, interval: 50 };

describe.skipIf(!chromiumAvailable())('the trip-planner page', () => {
  let server: RunningServer;
  let browser: Browser;
  let aliceToken: string;
  let tripId: string;
  let alice: Page;
  let bob: Page;
  let bobSocket: SocketGate;
  const scriptErrors: string[] = [];

  /**
   * Opens `path` in a fresh browser context (its own storage). With `who`, the page's script
   * errors and console errors (CSP violations among them) are recorded under that name.
   */
  async function openPage(path: string, o: { who?: string; gate?: boolean } = {}) {
    // A fixed locale, so amounts are written the same way on every machine.
    const context = await browser.newContext({ locale: 'en-US' });
    const page = await context.newPage();
    if (o.who) {
      page.on('pageerror', (err) => scriptErrors.push(`${o.who}: ${err.message}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error') scriptErrors.push(`${o.who}: ${msg.text()}`);
      });
    }
    const gate = o.gate ? await gateMiniappSocket(page) : undefined;
    await page.goto(`${server.url}${path}`);
    return { page, gate };
  }

  const value = (page: Page, testid: string, nth = 0) => page.getByTestId(testid).nth(nth).inputValue();
  const serverState = async () =>
    (await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: aliceToken })).body.state;

  beforeAll(async () => {
    const db = await createTestDatabase();
    server = await startTestServer(db.url);
    browser = await launchChromium();
    aliceToken = await token(ALICE);
    tripId = await createTrip(server.url, aliceToken, { participants: [BOB] });
    const bobToken = await token(BOB);
    alice = (await openPage(`/miniapp/${tripId}#token=${aliceToken}`, { who: 'alice' })).page;
    const opened = await openPage(`/miniapp/${tripId}#token=${bobToken}`, { who: 'bob', gate: true });
    bob = opened.page;
    bobSocket = opened.gate!;
  });

  it('opens the trip live for both people, shows both online and takes the token out of the address bar', async () => {
    for (const page of [alice, bob]) {
      await expect.poll(() => page.getByTestId('status').getAttribute('data-status'), POLL).toBe('open');
      await expect.poll(() => value(page, 'title-input'), POLL).toBe('Lisbon');
      await expect.poll(() => page.getByTestId('online-user').allTextContents(), POLL).toHaveLength(2);
      expect(page.url()).not.toContain('token');
    }
    const online = (await alice.getByTestId('online').textContent()) ?? '';
    expect(online).toContain(`${ALICE} (you)`);
    expect(online).toContain(BOB);
  });

  it("shows a title edited on one page on the other person's page", async () => {
    await alice.getByTestId('title-input').fill('Lisbon in May');
    await alice.getByTestId('title-input').press('Enter');
    await expect.poll(() => value(bob, 'title-input'), POLL).toBe('Lisbon in May');
    expect((await serverState()).title).toBe('Lisbon in May');
  });

  it('refuses an empty title with a message and puts the saved title back', async () => {
    await alice.getByTestId('title-input').fill('');
    await alice.getByTestId('title-input').press('Enter');
    await expect.poll(() => alice.getByTestId('error-message').textContent(), POLL).toContain('can’t be empty');
    expect(await value(alice, 'title-input')).toBe('Lisbon in May');
    await alice.getByTestId('dismiss-error').click();
  });

  it('shows a day and a plan added on one page on the other, and notes edited back', async () => {
    await bob.getByTestId('add-day').click();
    await bob.getByTestId('day-date').fill('2027-05-01');
    await bob.getByTestId('day-date').press('Enter');
    await bob.getByTestId('new-item-time').fill('09:30');
    await bob.getByTestId('new-item-title').fill('Pastéis de Belém');
    await bob.getByTestId('add-item').click();

    await expect.poll(() => alice.getByTestId('day').count(), POLL).toBe(1);
    await expect.poll(() => value(alice, 'day-date'), POLL).toBe('2027-05-01');
    await expect.poll(() => value(alice, 'item-title'), POLL).toBe('Pastéis de Belém');
    expect(await value(alice, 'item-time')).toBe('09:30');
    expect(await value(bob, 'new-item-title')).toBe('');

    await alice.getByTestId('item-notes').fill('Go before the queue');
    await alice.getByTestId('item-notes').blur();
    await expect.poll(() => value(bob, 'item-notes'), POLL).toBe('Go before the queue');
    const day = (await serverState()).days[0];
    expect(day).toMatchObject({
      date: '2027-05-01',
      items: [{ time: '09:30', title: 'Pastéis de Belém', notes: 'Go before the queue' }],
    });
  });

  it("keeps what someone is typing when another person's edit arrives, and saves it on blur", async () => {
    await bob.getByTestId('item-notes').fill('Go before the queue, take cash');
    await alice.getByTestId('day-date').fill('2027-05-02');
    await alice.getByTestId('day-date').press('Enter');
    await expect.poll(() => value(bob, 'day-date'), POLL).toBe('2027-05-02');
    expect(await value(bob, 'item-notes')).toBe('Go before the queue, take cash');
    expect((await serverState()).days[0].items[0].notes).toBe('Go before the queue');

    await bob.getByTestId('item-notes').blur();
    await expect.poll(() => value(alice, 'item-notes'), POLL).toBe('Go before the queue, take cash');
  });

  it('keeps members and budget lines in sync, with a total', async () => {
    await alice.getByTestId('new-member').fill('Ana');
    await alice.getByTestId('add-member').click();
    await alice.getByTestId('currency').fill('eur');
    await alice.getByTestId('currency').press('Enter');
    await alice.getByTestId('new-budget-label').fill('Tram tickets');
    await alice.getByTestId('new-budget-amount').fill('24.5');
    await alice.getByTestId('add-budget-item').click();
    await bob.getByTestId('new-budget-label').fill('Dinner');
    await bob.getByTestId('new-budget-amount').fill('60');
    await bob.getByTestId('add-budget-item').click();

    for (const page of [alice, bob]) {
      await expect
        .poll(() => page.getByTestId('member').allTextContents(), POLL)
        .toEqual([expect.stringContaining('Ana')]);
      await expect.poll(() => page.getByTestId('budget-total').textContent(), POLL).toContain('84.50');
      expect(await value(page, 'currency')).toBe('EUR');
    }
    expect((await serverState()).budget).toMatchObject({
      currency: 'EUR',
      items: [
        { label: 'Tram tickets', amount: 24.5 },
        { label: 'Dinner', amount: 60 },
      ],
    });
  });

  it('tells the person whose edit lost a race, keeps their text and re-applies it on request', async () => {
    // Bob stops hearing from the server, so he edits the title from a version Alice has passed.
    bobSocket.freeze();
    await alice.getByTestId('title-input').fill('Lisbon and Sintra');
    await alice.getByTestId('title-input').press('Enter');
    await expect.poll(async () => (await serverState()).title, POLL).toBe('Lisbon and Sintra');
    await expect.poll(() => bobSocket.held().some((f) => f.type === 'applied'), POLL).toBe(true);

    await bob.getByTestId('title-input').fill('Lisbon, Porto and the Douro');
    await bob.getByTestId('title-input').press('Enter');
    await expect.poll(() => bobSocket.held().some((f) => f.type === 'conflict'), POLL).toBe(true);
    bobSocket.release();

    const card = bob.getByTestId('conflict');
    await card.waitFor({ timeout: 5_000 });
    const text = (await card.textContent()) ?? '';
    expect(text).toContain('the trip title');
    expect(text).toContain(ALICE);
    expect(await card.getByTestId('conflict-mine').textContent()).toBe('Lisbon, Porto and the Douro');
    // Until Bob decides, both pages show what the server kept.
    await expect.poll(() => value(bob, 'title-input'), POLL).toBe('Lisbon and Sintra');
    expect(await alice.getByTestId('conflict').count()).toBe(0);

    await card.getByTestId('reapply').click();
    for (const page of [alice, bob]) {
      await expect.poll(() => value(page, 'title-input'), POLL).toBe('Lisbon, Porto and the Douro');
    }
    expect(await bob.getByTestId('conflict').count()).toBe(0);
    expect((await serverState()).title).toBe('Lisbon, Porto and the Douro');
  });

  it('explains an edit the server refused (invalid_op) in a message that does not block the page', async () => {
    // Alice sets the end date while Bob, not hearing from the server, sets a later start date.
    bobSocket.freeze();
    await alice.getByTestId('dates-end').fill('2027-05-03');
    await alice.getByTestId('dates-end').press('Enter');
    await expect.poll(async () => (await serverState()).dates.end, POLL).toBe('2027-05-03');
    await expect.poll(() => bobSocket.held().some((f) => f.type === 'applied'), POLL).toBe(true);
    await bob.getByTestId('dates-start').fill('2027-05-10');
    await bob.getByTestId('dates-start').press('Enter');
    await expect
      .poll(() => bobSocket.held().some((f) => f.type === 'error' && f.code === 'invalid_op'), POLL)
      .toBe(true);
    bobSocket.release();

    await expect.poll(() => bob.getByTestId('error-message').textContent(), POLL).toContain('must not be after');
    await expect.poll(() => value(bob, 'dates-start'), POLL).toBe('');
    expect(await value(bob, 'dates-end')).toBe('2027-05-03');
    expect((await serverState()).dates).toEqual({ start: null, end: '2027-05-03' });
    await bob.getByTestId('dismiss-error').click();
    expect(await bob.getByTestId('error-message').count()).toBe(0);
  });

  it('shows that it is reconnecting when the connection drops, then catches up with edits made meanwhile', async () => {
    await bob.evaluate(() => {
      const seen: string[] = [];
      const status = document.querySelector('[data-testid="status"]')!;
      new MutationObserver(() => seen.push(status.getAttribute('data-status') ?? '')).observe(status, {
        attributes: true,
      });
      (window as unknown as { seenStatuses: string[] }).seenStatuses = seen;
    });
    bobSocket.freeze();
    await bobSocket.drop();
    await alice.getByTestId('item-title').fill('Pastéis de Belém, then the tower');
    await alice.getByTestId('item-title').press('Enter');
    bobSocket.release();

    await expect.poll(() => value(bob, 'item-title'), POLL).toBe('Pastéis de Belém, then the tower');
    await expect.poll(() => bob.getByTestId('status').getAttribute('data-status'), POLL).toBe('open');
    const seen = await bob.evaluate(() => (window as unknown as { seenStatuses: string[] }).seenStatuses);
    expect(seen).toContain('reconnecting');
    expect(await value(bob, 'title-input')).toBe('Lisbon, Porto and the Douro');
  });

  it('ran without script errors or blocked resources on either page', () => {
    expect(scriptErrors).toEqual([]);
  });

  it('says the link has no access token when the fragment is missing', async () => {
    const { page } = await openPage(`/miniapp/${tripId}`);
    await expect.poll(() => page.getByTestId('fatal').textContent(), POLL).toContain('This link has no access token');
  });

  it('says access was refused when the token belongs to someone who is not a participant', async () => {
    const { page } = await openPage(`/miniapp/${tripId}#token=${await token(EVE)}`);
    await expect
      .poll(() => page.getByTestId('fatal').textContent(), POLL)
      .toContain('access was refused or the link expired');
    expect(await page.getByTestId('retry').isVisible()).toBe(true);
  });
});
