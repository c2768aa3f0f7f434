/**
 * Sharing a trip from the pages, in Chromium against a real server: the landing page (sign in
 * with a token from the link or pasted, create a trip, list the trips opened here), the trip
 * page's share section (add a person by phone number, the address to copy, a 7-day link that
 * opens the trip for anyone), display names from the token's `name` claim, a title that stays
 * readable on a phone, and no token ever in a request's URL.
 */
import type { Browser, BrowserContextOptions, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.ts';
import { chromiumAvailable, launchChromium } from '../helpers/browser.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { customToken, token } from '../helpers/tokens.ts';

const ALICE = '+15550170001';
const BOB = '+15550170002';

const POLL = { timeout: 5_000, interval: 50 };

describe.skipIf(!chromiumAvailable())('sharing a trip from the pages', () => {
  let server: RunningServer;
  let browser: Browser;
  let aliceToken: string;
  let landing: Page;
  let tripId: string;
  const scriptErrors: string[] = [];
  /** Every URL any page requested (documents, scripts, sockets, API calls). */
  const requested: string[] = [];

  async function newPage(who: string, options: BrowserContextOptions = {}) {
    const context = await browser.newContext({ locale: 'en-US', ...options });
    const page = await context.newPage();
    page.on('pageerror', (err) => scriptErrors.push(`${who}: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') scriptErrors.push(`${who}: ${msg.text()}`);
    });
    page.on('request', (req) => requested.push(req.url()));
    page.on('websocket', (ws) => requested.push(ws.url()));
    return page;
  }

  const value = (page: Page, testid: string) => page.getByTestId(testid).inputValue();
  const isOpen = (page: Page) =>
    expect.poll(() => page.getByTestId('status').getAttribute('data-status'), POLL).toBe('open');

  beforeAll(async () => {
    const db = await createTestDatabase();
    server = await startTestServer(db.url);
    browser = await launchChromium();
    aliceToken = await customToken({ sub: ALICE, role: 'user', name: 'Alice' });
  });

  it('signs in from the link, takes the token out of the address bar, and creates a trip that opens', async () => {
    landing = await newPage('alice');
    await landing.goto(`${server.url}/#token=${aliceToken}`);
    await expect.poll(() => landing.getByTestId('signed-in-as').textContent(), POLL).toBe('Alice');
    expect(landing.url()).toBe(`${server.url}/`);

    await landing.getByTestId('new-trip-title').fill('Madeira');
    await landing.getByTestId('create-trip').click();
    await landing.waitForURL(/\/miniapp\/ms_/);
    tripId = decodeURIComponent(new URL(landing.url()).pathname.split('/')[2]);
    await isOpen(landing);
    expect(await value(landing, 'title-input')).toBe('Madeira');
    expect(await landing.getByTestId('online').textContent()).toContain('Alice (you)');
    expect(await landing.getByTestId('participants').textContent()).toBe('Alice (you)');
    expect((await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: aliceToken })).body.state.title).toBe(
      'Madeira',
    );
  });

  it('lists the trip on the landing page', async () => {
    await landing.goto(`${server.url}/`);
    await expect.poll(() => landing.getByTestId('my-trip').allTextContents(), POLL).toEqual(['Madeira']);
    await landing.getByTestId('my-trip').click();
    await landing.waitForURL(`${server.url}/miniapp/${tripId}`);
    await isOpen(landing);
  });

  it('refuses a phone number without its country code, then adds a person by phone number', async () => {
    await landing.getByTestId('share-phone').fill('555 0170');
    await landing.getByTestId('share-add').click();
    await expect.poll(() => landing.getByTestId('share-message').textContent(), POLL).toContain('country code');
    expect((await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: aliceToken })).body.participants).toEqual([
      ALICE,
    ]);

    await landing.getByTestId('share-phone').fill('+1 555 017 0002');
    await landing.getByTestId('share-add').click();
    await expect.poll(() => landing.getByTestId('participant').allTextContents(), POLL).toEqual(['Alice (you)', BOB]);
    expect(await value(landing, 'share-phone')).toBe('');
    expect((await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: aliceToken })).body.participants).toEqual([
      ALICE,
      BOB,
    ]);
  });

  it('gives the trip address without a token, which the added person opens after signing in with theirs', async () => {
    expect(await value(landing, 'share-url')).toBe(`${server.url}/miniapp/${tripId}`);
    const bob = await newPage('bob');
    await bob.goto(`${server.url}/`);
    await bob.getByTestId('token-input').fill('not a token');
    await bob.getByTestId('token-save').click();
    await expect.poll(() => bob.getByTestId('landing-message').textContent(), POLL).toContain('not an access token');
    await bob.getByTestId('token-input').fill(await token(BOB));
    await bob.getByTestId('token-save').click();
    await expect.poll(() => bob.getByTestId('signed-in-as').textContent(), POLL).toBe(BOB);
    await bob.goto(await value(landing, 'share-url'));
    await isOpen(bob);
    expect(await value(bob, 'title-input')).toBe('Madeira');
  });

  it('makes a link anyone can open for this trip only, without the share actions', async () => {
    await landing.getByTestId('share-link-create').click();
    await expect.poll(() => value(landing, 'share-link'), POLL).toMatch(/#token=/);
    const link = await value(landing, 'share-link');
    expect(link.startsWith(`${server.url}/miniapp/${tripId}#token=`)).toBe(true);

    const guest = await newPage('guest');
    await guest.goto(link);
    await isOpen(guest);
    expect(await value(guest, 'title-input')).toBe('Madeira');
    expect(guest.url()).toBe(`${server.url}/miniapp/${tripId}`);
    expect(await guest.getByTestId('share-add').count()).toBe(0);
    expect(await guest.getByTestId('share-link-create').count()).toBe(0);
  });

  it('keeps the title readable on a 390 px wide phone', async () => {
    const id = await createTrip(server.url, aliceToken, { participants: [BOB] });
    const phone = await newPage('phone', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await phone.goto(`${server.url}/miniapp/${id}#token=${aliceToken}`);
    await isOpen(phone);
    expect(await phone.getByTestId('online-user').count()).toBe(1);
    const title = phone.getByTestId('title-input');
    const fontSize = await title.evaluate((el) => Number.parseFloat(getComputedStyle(el).fontSize));
    expect(fontSize).toBeGreaterThanOrEqual(20);
    const box = await title.boundingBox();
    expect(box?.width).toBeGreaterThanOrEqual(250);
    const pageWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
    expect(pageWidth).toBeLessThanOrEqual(390);
  });

  it('never put a token in a URL the pages requested', () => {
    expect(requested.length).toBeGreaterThan(0);
    expect(requested.filter((url) => /token=|eyJ/.test(url.split('#')[0]))).toEqual([]);
  });

  it('ran without script errors or blocked resources on any page', () => {
    expect(scriptErrors).toEqual([]);
  });
});
