/**
 * `sid` share links (docs/protocol.md "JWT", "Tenancy and hostile input"): a token that carries
 * `sid` opens `GET /v1/miniapps/<sid>` and the socket of `<sid>`, nothing else. Every other
 * route that takes a token answers 403 `forbidden` to it, whatever its role and whether or not
 * its holder could do that with a plain token.
 */
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { Role } from '../../src/auth/verifyToken.ts';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { connectRelay, postEvents, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { openSocket, refusedStatus } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15556660001';
const BOB = '+15556660002';
const STRANGER = '+15556660999';
const DIRECT = `user_${ALICE}_persona_sage`;

let server: RunningServer;
/** Alice's trip, the one the share link names. */
let shared: string;
/** Another trip of Alice's. */
let other: string;

const sidToken = (sub: string, role: Role = 'user') => token(sub, { sid: shared, role });

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url);
  const alice = await token(ALICE);
  shared = await createTrip(server.url, alice);
  other = await createTrip(server.url, alice);
  // Alice's 1:1 history with Sage exists, so a plain token of hers reads it (200).
  const relay = await token('relay-1', { role: 'relay' });
  expect((await postEvents(server.url, relay, relayEvent({ sender: ALICE, text: 'hello Sage' }))).status).toBe(202);
  await vi.waitFor(
    async () => {
      const res = await api(server.url, 'GET', `/v1/conversations/${DIRECT}/messages`, { token: alice });
      expect(res.status).toBe(200);
    },
    { timeout: 15_000, interval: 100 },
  );
});

interface Attempt {
  what: string;
  role?: Role;
  method: 'GET' | 'POST';
  path: () => string;
  body?: () => unknown;
}

/** Every route that takes a token, except the one read a share link opens. */
const refused: Attempt[] = [
  { what: 'creates a session', method: 'POST', path: () => '/v1/miniapps', body: () => ({ app: 'trip-planner' }) },
  {
    what: 'adds a participant to its own session',
    method: 'POST',
    path: () => `/v1/miniapps/${shared}/participants`,
    body: () => ({ user: BOB }),
  },
  {
    what: 'adds a participant to another session of its holder',
    method: 'POST',
    path: () => `/v1/miniapps/${other}/participants`,
    body: () => ({ user: BOB }),
  },
  { what: 'reads another session of its holder', method: 'GET', path: () => `/v1/miniapps/${other}` },
  { what: 'reads an unknown session', method: 'GET', path: () => '/v1/miniapps/ms_unknown' },
  {
    what: "reads its holder's 1:1 history with Sage",
    method: 'GET',
    path: () => `/v1/conversations/${DIRECT}/messages`,
  },
  {
    what: 'reads a conversation as an admin',
    role: 'admin',
    method: 'GET',
    path: () => `/v1/conversations/${DIRECT}/messages`,
  },
  {
    what: 'posts relay events as a relay',
    role: 'relay',
    method: 'POST',
    path: () => '/v1/relay/events',
    body: () => relayEvent({ sender: ALICE, text: 'from a share link' }),
  },
];

describe('a token with sid over HTTP', () => {
  it('reads its own session, even when its holder is not a participant', async () => {
    for (const sub of [ALICE, STRANGER]) {
      const res = await api(server.url, 'GET', `/v1/miniapps/${shared}`, { token: await sidToken(sub) });
      expect(res.status).toBe(200);
      expect(res.body.id).toBe(shared);
    }
  });

  for (const a of refused) {
    it(`answers 403 forbidden when it ${a.what}`, async () => {
      const res = await api(server.url, a.method, a.path(), {
        token: await sidToken(ALICE, a.role),
        ...(a.body ? { body: a.body() } : {}),
      });
      expect(res.status).toBe(403);
      expect(res.body.error.code).toBe(Codes.forbidden);
    });
  }

  it('changes nothing when refused: the shared session keeps its participants', async () => {
    const res = await api(server.url, 'GET', `/v1/miniapps/${shared}`, { token: await token(ALICE) });
    expect(res.body.participants).toEqual([ALICE]);
  });
});

describe('a token with sid on the socket', () => {
  it('opens the socket of its own session and no other', async () => {
    const socket = await openSocket(server.url, shared, await sidToken(STRANGER));
    socket.close();
    expect(await refusedStatus(server.url, other, await sidToken(ALICE))).toBe(403);
  });

  it('does not open the relay socket, even with role relay', async () => {
    const refused = await connectRelay(server.url, await sidToken(ALICE, 'relay')).then(
      async (relay) => {
        await relay.close();
        return undefined;
      },
      (err: { status?: number }) => err.status,
    );
    expect(refused).toBe(403);
  });
});
