/**
 * `JWT_JWKS_URL` (docs/protocol.md "JWT", README "Configuration"): a server without `JWT_SECRET`
 * verifies tokens against the keys a JWKS endpoint serves — RS256/ES256/EdDSA only, never a
 * symmetric algorithm — picks up a key added under a new `kid`, and keeps verifying with the
 * keys it fetched while the JWKS endpoint is down.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, exportSPKI, generateKeyPair, type JWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { openSocket, refusedStatus } from '../helpers/socket.ts';
import { AUDIENCE, ISSUER, TEST_SECRET } from '../helpers/tokens.ts';

const ALICE = '+15552220001';
/** verifyToken.ts' JWKS_COOLDOWN_MS: the longest a new `kid` waits for the set to be fetched again. */
const JWKS_COOLDOWN_MS = 5000;

/** A JWKS endpoint of the test's own: serves `keys`, counts fetches. */
const jwks = { keys: [] as JWK[], fetches: 0 };
let jwksServer: Server;
let jwksUrl: string;

let server: RunningServer;
let tripId: string;
let rsa: { privateKey: CryptoKey; publicKey: CryptoKey };

afterAll(
  () =>
    new Promise<void>((resolve) => {
      jwksServer.closeAllConnections();
      jwksServer.close(() => resolve());
    }),
);

beforeAll(async () => {
  jwksServer = createServer((_req, res) => {
    jwks.fetches++;
    res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
    res.end(JSON.stringify({ keys: jwks.keys }));
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;

  rsa = await generateKeyPair('RS256');
  jwks.keys.push({ ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' });

  const db = await createTestDatabase();
  // An empty JWT_SECRET counts as unset: this server has only the JWKS.
  server = await startTestServer(db.url, { JWT_SECRET: '', JWT_JWKS_URL: jwksUrl });
  const created = await api(server.url, 'POST', '/v1/miniapps', {
    token: await sign(rsa.privateKey, 'RS256', 'rsa-1'),
    body: { app: 'trip-planner', title: 'Porto' },
  });
  expect(created.status).toBe(201);
  tripId = created.body.id;
});

/** A token for ALICE (unique, so the server's cache of verified tokens never answers for it). */
function sign(key: CryptoKey | Uint8Array, alg: string, kid?: string, sub = ALICE): Promise<string> {
  return new SignJWT({ role: 'user', jti: randomUUID() })
    .setProtectedHeader(kid ? { alg, kid } : { alg })
    .setSubject(sub)
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(key);
}

async function authFailures(reason: string): Promise<number> {
  const text = (await api(server.url, 'GET', '/metrics')).body as string;
  const m = new RegExp(`archety_auth_failures_total\\{reason="${reason}"\\} (\\d+)`).exec(text);
  return Number(m?.[1] ?? 0);
}

const read = (token: string) => api(server.url, 'GET', `/v1/miniapps/${tripId}`, { token });

describe('tokens verified against JWT_JWKS_URL', () => {
  it('accepts a token signed by a key of the JWKS over HTTP and for a socket upgrade', async () => {
    const res = await read(await sign(rsa.privateKey, 'RS256', 'rsa-1'));
    expect(res.status).toBe(200);
    expect(res.body.participants).toEqual([ALICE]);

    const s = await openSocket(server.url, tripId, await sign(rsa.privateKey, 'RS256', 'rsa-1'));
    expect((await s.next('snapshot')).state).toMatchObject({ title: 'Porto' });
    s.close();
  });

  it('refuses with 401 a token signed by another RS256 key under the JWKS key id', async () => {
    const other = await generateKeyPair('RS256');
    const before = await authFailures('bad_signature');
    const res = await read(await sign(other.privateKey, 'RS256', 'rsa-1'));
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe(Codes.unauthorized);
    expect(await refusedStatus(server.url, tripId, await sign(other.privateKey, 'RS256', 'rsa-1'))).toBe(401);
    expect(await authFailures('bad_signature')).toBe(before + 2);
  });

  it('refuses HS256 tokens with 401 whatever the secret, the public key itself included', async () => {
    const publicJwk = await exportJWK(rsa.publicKey);
    const secrets = [
      TEST_SECRET,
      await exportSPKI(rsa.publicKey),
      JSON.stringify(publicJwk),
      publicJwk.n as string,
    ].map((s) => new TextEncoder().encode(s));
    const before = await authFailures('disallowed_alg');
    for (const secret of secrets) {
      const res = await read(await sign(secret, 'HS256', 'rsa-1'));
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe(Codes.unauthorized);
    }
    expect(await refusedStatus(server.url, tripId, await sign(secrets[1], 'HS256', 'rsa-1'))).toBe(401);
    // Refused for its algorithm, before any key is looked for.
    expect(await authFailures('disallowed_alg')).toBe(before + secrets.length + 1);
  });

  it('accepts a key added to the JWKS under a new kid within the refetch cooldown, and keeps the old one', async () => {
    const ec = await generateKeyPair('ES256');
    jwks.keys.push({ ...(await exportJWK(ec.publicKey)), kid: 'ec-2', alg: 'ES256', use: 'sig' });
    const fetchesBefore = jwks.fetches;
    await expect
      .poll(async () => (await read(await sign(ec.privateKey, 'ES256', 'ec-2'))).status, {
        timeout: JWKS_COOLDOWN_MS + 5000,
        interval: 250,
      })
      .toBe(200);
    // One fetch picked the new key up, however many tokens asked for it during the cooldown.
    expect(jwks.fetches).toBe(fetchesBefore + 1);
    expect((await read(await sign(rsa.privateKey, 'RS256', 'rsa-1'))).status).toBe(200);
    const s = await openSocket(server.url, tripId, await sign(ec.privateKey, 'ES256', 'ec-2'));
    await s.next('snapshot');
    s.close();
  });

  it('keeps accepting tokens of the fetched keys while the JWKS endpoint is down, and refuses unknown kids with 401', async () => {
    await new Promise<void>((resolve) => {
      jwksServer.closeAllConnections();
      jwksServer.close(() => resolve());
    });
    expect((await read(await sign(rsa.privateKey, 'RS256', 'rsa-1'))).status).toBe(200);
    const s = await openSocket(server.url, tripId, await sign(rsa.privateKey, 'RS256', 'rsa-1'));
    await s.next('snapshot');
    s.close();

    const unknown = await generateKeyPair('RS256');
    const before = await authFailures('jwks_unavailable');
    // While the cooldown since the last fetch lasts, an unknown kid is refused from the cache;
    // after it, the server tries the endpoint, which is down: still a 401, never a hang or a 500.
    await expect
      .poll(
        async () => {
          const res = await read(await sign(unknown.privateKey, 'RS256', 'rsa-3'));
          expect(res.status).toBe(401);
          expect(res.body.error.code).toBe(Codes.unauthorized);
          return authFailures('jwks_unavailable');
        },
        { timeout: JWKS_COOLDOWN_MS + 5000, interval: 250 },
      )
      .toBeGreaterThan(before);
    expect((await read(await sign(rsa.privateKey, 'RS256', 'rsa-1'))).status).toBe(200);
  });
});
