import { beforeAll, describe, expect, it } from 'vitest';
import { CloseCodes, Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { openSocket, refusedStatus } from '../helpers/socket.ts';
import { customToken, token, unsecuredToken } from '../helpers/tokens.ts';

const ALICE = '+15551110001';
const MALLORY = '+15551110666';
const now = () => Math.floor(Date.now() / 1000);

let server: RunningServer;
let tripId: string;
let otherTrip: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url);
  const alice = await token(ALICE);
  tripId = await createTrip(server.url, alice);
  otherTrip = await createTrip(server.url, alice);
});

const refusals: [string, () => Promise<string | undefined>][] = [
  ['no token', async () => undefined],
  ['a malformed token', async () => 'not-a-jwt'],
  [
    'a token with a bad signature',
    () => customToken({ sub: ALICE }, { secret: 'another-secret-of-at-least-32-bytes!!' }),
  ],
  ['an unsigned token (alg: none)', async () => unsecuredToken(ALICE)],
  ['an expired token', () => customToken({ sub: ALICE }, { exp: now() - 60 })],
  ['a token whose nbf is in the future', () => customToken({ sub: ALICE }, { nbf: now() + 600 })],
  ['a token without exp', () => customToken({ sub: ALICE }, { exp: null })],
  ['a token without sub', () => customToken({})],
  ['a token for another issuer', () => customToken({ sub: ALICE }, { iss: 'someone-else' })],
  ['a token for another audience', () => customToken({ sub: ALICE }, { aud: 'someone-else' })],
];

describe('authentication on upgrade', () => {
  for (const carrier of ['protocol', 'query'] as const) {
    for (const [what, make] of refusals) {
      it(`refuses the upgrade with 401 for ${what} (${carrier} carrier)`, async () => {
        expect(await refusedStatus(server.url, tripId, await make(), carrier)).toBe(401);
      });
    }
  }

  it('refuses a valid token of a non-participant with 403', async () => {
    expect(await refusedStatus(server.url, tripId, await token(MALLORY))).toBe(403);
  });

  it('refuses a relay token with 403', async () => {
    expect(await refusedStatus(server.url, tripId, await token(ALICE, { role: 'relay' }))).toBe(403);
  });

  it('refuses an unknown session with 404', async () => {
    expect(await refusedStatus(server.url, 'ms_does_not_exist', await token(ALICE))).toBe(404);
  });

  it('opens a session for the holder of its sid token who is not a participant', async () => {
    const s = await openSocket(server.url, tripId, await token(MALLORY, { sid: tripId }));
    expect((await s.next('snapshot')).version).toBeGreaterThanOrEqual(0);
    s.close();
  });

  it('refuses a sid token for another session with 403, even for a participant', async () => {
    expect(await refusedStatus(server.url, otherTrip, await token(ALICE, { sid: tripId }))).toBe(403);
  });

  it('accepts the token from the query and answers no subprotocol then', async () => {
    const s = await openSocket(server.url, tripId, await token(ALICE), 'query');
    expect(s.protocol).toBe('');
    await s.next('snapshot');
    s.close();
  });

  it('answers archety.v1 and never echoes the token in the handshake', async () => {
    const t = await token(ALICE);
    const s = await openSocket(server.url, tripId, t);
    expect(s.protocol).toBe('archety.v1');
    s.close();
  });

  it('closes the socket with 1008 "token expired" when the token expires', async () => {
    const s = await openSocket(server.url, tripId, await token(ALICE, { ttlS: 2 }));
    await s.next('snapshot');
    const closed = await s.closed;
    expect(closed).toEqual({ code: CloseCodes.policyViolation, reason: 'token expired' });
  });

  it('answers refused upgrades with the JSON error body and counts them by reason', async () => {
    const before = await api(server.url, 'GET', '/metrics');
    expect(await refusedStatus(server.url, tripId, await customToken({ sub: ALICE }, { exp: now() - 60 }))).toBe(401);
    const after = await api(server.url, 'GET', '/metrics');
    const count = (text: string) =>
      Number(/archety_auth_failures_total\{reason="expired"\} (\d+)/.exec(text)?.[1] ?? 0);
    expect(count(after.body)).toBe(count(before.body) + 1);
  });
});

describe('authentication over HTTP', () => {
  for (const [what, make] of refusals) {
    it(`answers 401 unauthorized for ${what}`, async () => {
      const res = await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: await make() });
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe(Codes.unauthorized);
    });
  }

  it('answers 403 to a participant-only read by a non-participant and 404 for an unknown session', async () => {
    const mallory = await token(MALLORY);
    expect((await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: mallory })).status).toBe(403);
    const unknown = await api(server.url, 'GET', '/v1/miniapps/ms_nope', { token: mallory });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe(Codes.session_not_found);
  });
});
