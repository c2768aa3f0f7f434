/**
 * Sharing a trip: the create answer's `url`, strict create and participant bodies (an unknown
 * field is refused with its path, never ignored), the landing page at `/`, and share links
 * minted by `POST /v1/miniapps/:id/share-links` (a participant's token only, signed with the
 * server's own secret, expiring in 7 days, refused by a server that verifies with a JWKS).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import { SHARE_LINK_TTL_S } from '../../src/miniapp/miniappService.ts';
import type { RunningServer } from '../../src/server.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { AUDIENCE, ISSUER, token } from '../helpers/tokens.ts';

const ALICE = '+15550160001';
const BOB = '+15550160002';
const STRANGER = '+15550160999';

let server: RunningServer;
let alice: string;
let tripId: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url);
  alice = await token(ALICE);
  tripId = await createTrip(server.url, alice);
});

const mint = (id: string, bearer?: string) =>
  api(server.url, 'POST', `/v1/miniapps/${encodeURIComponent(id)}/share-links`, { token: bearer });

describe('POST /v1/miniapps', () => {
  it('answers the page url (without a token) beside every field it answered before', async () => {
    const res = await api(server.url, 'POST', '/v1/miniapps', {
      token: alice,
      body: { app: 'trip-planner', title: 'Faro', participants: [BOB] },
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ app: 'trip-planner', version: 0, state: { title: 'Faro' } });
    expect(res.body.participants).toEqual([ALICE, BOB]);
    expect(res.body.url).toBe(`/miniapp/${res.body.id}`);
    const page = await fetch(`${server.url}${res.body.url}`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
  });

  it.each([
    ['members', { members: [BOB] }, ['members']],
    ['a misspelt title', { titel: 'Faro' }, ['titel']],
  ])('refuses an unknown field (%s) with 400 and its path, creating nothing', async (_what, extra, path) => {
    const res = await api(server.url, 'POST', '/v1/miniapps', {
      token: alice,
      body: { app: 'trip-planner', title: 'Faro', ...extra },
    });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path });
    expect(res.body.error.message).toContain('not a known field');
  });

  it('refuses a participant that is not a user id with the path of that entry', async () => {
    const res = await api(server.url, 'POST', '/v1/miniapps', {
      token: alice,
      body: { app: 'trip-planner', participants: [BOB, ''] },
    });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path: ['participants', 1] });
  });
});

describe('POST /v1/miniapps/:id/participants', () => {
  it('adds a person, who can then read the trip', async () => {
    const id = await createTrip(server.url, alice);
    const res = await api(server.url, 'POST', `/v1/miniapps/${id}/participants`, { token: alice, body: { user: BOB } });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id, participants: [ALICE, BOB] });
    expect((await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: await token(BOB) })).status).toBe(200);
  });

  it('refuses an unknown field with 400 and its path, adding no one', async () => {
    const id = await createTrip(server.url, alice);
    const res = await api(server.url, 'POST', `/v1/miniapps/${id}/participants`, {
      token: alice,
      body: { user: BOB, role: 'admin' },
    });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path: ['role'] });
    expect((await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: alice })).body.participants).toEqual([ALICE]);
  });
});

describe('GET /', () => {
  it('serves the landing page, with the same script and content security policy as the trip page', async () => {
    const res = await fetch(`${server.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/html');
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await res.text()).toContain('/miniapp-assets/client.js');
  });
});

describe('POST /v1/miniapps/:id/share-links', () => {
  it("mints a link to the page whose token opens only this trip, for 7 days, under a subject of the link's own", async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await mint(tripId, alice);
    expect(res.status).toBe(201);
    const { url, token: link, expiresAt } = res.body;
    expect(url).toBe(`/miniapp/${tripId}#token=${link}`);
    const claims = decodeJwt(link);
    expect(claims).toMatchObject({ sid: tripId, role: 'user', iss: ISSUER, aud: AUDIENCE });
    expect(claims.sub).toMatch(/^guest_/);
    expect(claims.sub).not.toBe(ALICE);
    expect(claims.exp! - before).toBeGreaterThanOrEqual(SHARE_LINK_TTL_S);
    expect(claims.exp! - before).toBeLessThanOrEqual(SHARE_LINK_TTL_S + 5);
    expect(SHARE_LINK_TTL_S).toBe(7 * 24 * 3600);
    expect(Date.parse(expiresAt) / 1000).toBe(claims.exp);

    expect((await api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token: link })).status).toBe(200);
    const socket = await openSocket(server.url, tripId, link);
    expect((await socket.next('snapshot')).state).toMatchObject({ title: 'Lisbon' });
    socket.close();
    const other = await createTrip(server.url, alice);
    const elsewhere = await api(server.url, 'GET', `/v1/miniapps/${other}`, { token: link });
    expect(elsewhere.status).toBe(403);
    expect(elsewhere.body.error.code).toBe(Codes.forbidden);
  });

  it('mints a different link each time', async () => {
    const [a, b] = await Promise.all([mint(tripId, alice), mint(tripId, alice)]);
    expect(decodeJwt(a.body.token).sub).not.toBe(decodeJwt(b.body.token).sub);
  });

  it('refuses someone who is not a participant with 403', async () => {
    const res = await mint(tripId, await token(STRANGER));
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe(Codes.forbidden);
  });

  it('answers 404 for a trip that does not exist', async () => {
    const res = await mint('ms_nosuchtrip', alice);
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe(Codes.session_not_found);
  });

  it("refuses a share link's own token with 403, even for its own trip, so a link cannot make links", async () => {
    const link = (await mint(tripId, alice)).body.token;
    for (const id of [tripId, await createTrip(server.url, alice)]) {
      const res = await mint(id, link);
      expect(res.status).toBe(403);
      expect(res.body.error.code).toBe(Codes.forbidden);
    }
  });

  it('refuses a request without a token with 401, and a relay token with 403', async () => {
    expect((await mint(tripId)).status).toBe(401);
    const relay = await mint(tripId, await token('relay-1', { role: 'relay' }));
    expect(relay.status).toBe(403);
  });
});

describe('POST /v1/miniapps/:id/share-links on a server that verifies with JWT_JWKS_URL', () => {
  it('answers 501 share_links_unavailable: it holds no key to sign with', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const jwks = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    onCleanup(
      () =>
        new Promise<void>((resolve) => {
          jwks.closeAllConnections();
          jwks.close(() => resolve());
        }),
    );
    const db = await createTestDatabase();
    const jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
    const jwksServer = await startTestServer(db.url, { JWT_SECRET: '', JWT_JWKS_URL: jwksUrl });
    const rsaToken = await new SignJWT({ role: 'user' })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setSubject(ALICE)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime('1h')
      .sign(privateKey);
    const id = await createTrip(jwksServer.url, rsaToken);
    const res = await api(jwksServer.url, 'POST', `/v1/miniapps/${id}/share-links`, { token: rsaToken });
    expect(res.status).toBe(501);
    expect(res.body.error.code).toBe(Codes.share_links_unavailable);
    expect(res.body.error.message).toContain('JWT_JWKS_URL');
  });
});
