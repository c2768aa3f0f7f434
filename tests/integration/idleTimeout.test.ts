/**
 * `WS_IDLE_TIMEOUT_S` (README "Configuration"): the server pings its sockets; one that stays
 * silent — not even a pong — is closed after about that long, and uWebSockets.js closes it
 * without a close frame (1006 at the client); one that answers the pings stays open.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { createTrip } from '../helpers/http.ts';
import { baseEnv, startTestServer } from '../helpers/server.ts';
import { wsUrl } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15553330001';
/** uWebSockets.js' smallest idle timeout (it aborts the process below 8). */
const IDLE_S = 8;
/** uWebSockets.js checks timeouts every 4 s, so a timeout fires up to that much early or late. */
const GRANULARITY_S = 4;
/** RFC 6455: the connection ended without a close frame. */
const ABNORMAL_CLOSURE = 1006;

let databaseUrl: string;
let server: RunningServer;
let tripId: string;
let alice: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  databaseUrl = db.url;
  server = await startTestServer(db.url, { WS_IDLE_TIMEOUT_S: String(IDLE_S) });
  alice = await token(ALICE);
  tripId = await createTrip(server.url, alice);
});

interface Client {
  ws: WebSocket;
  pings: number;
  frames: { type: string; opId?: string }[];
  closed: Promise<{ code: number; at: number }>;
}

/** A raw client; with `autoPong: false` it never answers the server's pings. */
async function connect(autoPong: boolean): Promise<Client> {
  const ws = new WebSocket(wsUrl(server.url, tripId), ['archety.v1', `bearer.${alice}`], { autoPong });
  const client: Client = {
    ws,
    pings: 0,
    frames: [],
    closed: new Promise((resolve) => ws.on('close', (code) => resolve({ code, at: Date.now() }))),
  };
  ws.on('ping', () => client.pings++);
  ws.on('message', (data) => client.frames.push(JSON.parse(data.toString())));
  await new Promise<void>((resolve, reject) => {
    ws.on('open', () => resolve());
    ws.on('error', reject);
  });
  return client;
}

describe('WS_IDLE_TIMEOUT_S', () => {
  it('refuses at start a value below 8 s, naming the variable', () => {
    for (const value of ['0', '4', '7']) {
      expect(() => loadConfig(baseEnv(databaseUrl, { WS_IDLE_TIMEOUT_S: value }))).toThrow(
        /invalid configuration: WS_IDLE_TIMEOUT_S=/,
      );
    }
  });

  it('closes a socket that answers no pings after about the timeout, and keeps one that answers them open', async () => {
    const openedAt = Date.now();
    const [silent, live] = await Promise.all([connect(false), connect(true)]);
    try {
      let closed: { code: number; at: number } | undefined;
      void silent.closed.then((c) => (closed = c));
      await expect.poll(() => closed, { timeout: (IDLE_S + 2 * GRANULARITY_S) * 1000 }).toBeDefined();
      const { code, at } = closed as { code: number; at: number };
      expect(code).toBe(ABNORMAL_CLOSURE);
      expect(silent.pings).toBeGreaterThanOrEqual(1);
      expect(at - openedAt).toBeGreaterThanOrEqual((IDLE_S - GRANULARITY_S) * 1000);

      // The live socket is pinged every half timeout and answers: after four pings it has
      // been open well past the timeout, and still works.
      await expect
        .poll(() => (live.ws.readyState === WebSocket.OPEN ? live.pings : -1), { timeout: 3 * IDLE_S * 1000 })
        .toBeGreaterThanOrEqual(4);
      expect(Date.now() - openedAt).toBeGreaterThan(IDLE_S * 1000);
      live.ws.send(
        JSON.stringify({
          type: 'op',
          opId: 'still-here',
          baseVersion: 0,
          op: { kind: 'set', path: ['title'], value: 'Still here' },
        }),
      );
      await expect.poll(() => live.frames.some((f) => f.type === 'applied' && f.opId === 'still-here')).toBe(true);
    } finally {
      silent.ws.terminate();
      live.ws.close();
    }
  });
});
