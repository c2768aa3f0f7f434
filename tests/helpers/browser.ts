/**
 * Debian's Chromium driven by playwright-core, for `tests/e2e/`. Never a downloaded browser:
 * the tests use the system package (`apt-get install -y chromium`).
 */
import { existsSync } from 'node:fs';
import { type Browser, chromium, type Page, type WebSocketRoute } from 'playwright-core';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { onCleanup } from './cleanup.ts';

export const CHROMIUM_PATH = '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * True when Chromium is installed. When it is not: throws under CI (a missing browser must
 * not pass as a green run), otherwise warns loudly so the caller can skip its tests.
 */
export function chromiumAvailable(): boolean {
  if (existsSync(CHROMIUM_PATH)) return true;
  const why = `${CHROMIUM_PATH} is missing, so the browser (e2e) tests cannot run. Install it with: apt-get install -y chromium`;
  if (process.env.CI) throw new Error(why);
  console.warn(`\n${'!'.repeat(100)}\n[e2e] SKIPPED: ${why}\n${'!'.repeat(100)}\n`);
  return false;
}

/** Launches headless Chromium; it is closed after the file's tests. */
export async function launchChromium(): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: ARGS, headless: true, timeout: 20_000 });
  onCleanup(() => browser.close());
  return browser;
}

export interface SocketGate {
  /** Holds back every frame the server sends to the page from now on. */
  freeze(): void;
  /** The frames held back so far, in order. */
  held(): ServerFrame[];
  /** Delivers the held frames in order and lets later ones through. */
  release(): void;
  /** Closes the page's current socket with `code`, as a dropped connection would (the page may reconnect). */
  drop(code?: number): Promise<void>;
}

/**
 * Routes the page's `/v1/miniapp/` socket through the test, so the frames from the server can
 * be held back: the page then edits from a version others have already moved past. Call it
 * before the page opens the socket. Frames from the page to the server pass untouched.
 */
export async function gateMiniappSocket(page: Page): Promise<SocketGate> {
  const held: string[] = [];
  let frozen = false;
  let toPage: WebSocketRoute | undefined;
  await page.routeWebSocket(/\/v1\/miniapp\//, (ws) => {
    toPage = ws;
    const server = ws.connectToServer();
    server.onMessage((message) => {
      const text = message.toString();
      if (frozen) held.push(text);
      else ws.send(text);
    });
  });
  return {
    freeze: () => {
      frozen = true;
    },
    held: () => held.map((text) => JSON.parse(text) as ServerFrame),
    release: () => {
      frozen = false;
      for (const text of held.splice(0)) toPage?.send(text);
    },
    drop: async (code = 4001) => {
      await toPage?.close({ code, reason: 'dropped by the test' });
    },
  };
}
