/**
 * Connecting an integration through the real server against the tests' own OAuth provider
 * (docs/protocol.md "Integrations"): connect → authorize → callback → listed; disconnect
 * revokes; and every bad input (no or wrong token, unknown provider, bad callback parameters,
 * replayed, expired, forged or misdirected state, a provider that declines, answers 500 or
 * garbage, hangs, or gives no `expires_in`) gets its documented answer with nothing stored.
 * Integrations without VAULT_KEYS (DATABASE_URL set) answer 501 and the start line says so.
 */
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { authorize, type FakeOAuthProvider, startFakeOAuthProvider } from '../helpers/fakeOAuthProvider.ts';
import { api } from '../helpers/http.ts';
import { startLoggedServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15557100001';
const BOB = '+15557100002';
const VAULT_KEYS = `t1:${Buffer.alloc(32, 7).toString('base64url')}`;

let db: TestDatabase;
let fake: FakeOAuthProvider;
let server: RunningServer;
let lines: string[];
let alice: string;

beforeAll(async () => {
  db = await createTestDatabase();
  fake = await startFakeOAuthProvider();
  ({ server, lines } = await startLoggedServer(db.url, {
    VAULT_KEYS,
    OAUTH_TIMEOUT_MS: '300',
    OAUTH_ATTEMPTS: '1',
    ...fake.env('calendar'),
    ...fake.env('notes', { discovery: false }),
  }));
  alice = await token(ALICE);
});

beforeEach(() => {
  Object.assign(fake.behaviour, { tokenFailure: null, tokenFailureCount: undefined, deny: false, expiresIn: 3600 });
});

const rows = async () => (await db.pool.query('SELECT * FROM oauth_tokens ORDER BY user_id, provider')).rows;
const reset = () => db.pool.query('DELETE FROM oauth_tokens; DELETE FROM oauth_states');
const states = async () => Number((await db.pool.query('SELECT count(*) FROM oauth_states')).rows[0].count);

/** Connect as `tok` to `provider`: the URL the server hands out. */
async function connectUrl(provider = 'calendar', tok = alice): Promise<string> {
  const res = await api(server.url, 'POST', `/v1/integrations/${provider}/connect`, { token: tok });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.url;
}

/** Opens a callback URL (the provider's redirect, or one a test made) on the server. */
async function openCallback(url: URL | string): Promise<{ status: number; text: string; code: string | null }> {
  const u = new URL(url, server.url);
  const res = await fetch(`${server.url}${u.pathname}${u.search}`);
  return { status: res.status, text: await res.text(), code: res.headers.get('x-error-code') };
}

describe('connecting an integration', () => {
  it('connects a user through the provider with PKCE and lists it without any token', async () => {
    const url = new URL(await connectUrl());
    expect(url.origin).toBe(fake.issuer);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('redirect_uri')).toBe(`${server.url}/v1/integrations/calendar/callback`);
    expect(url.searchParams.get('scope')).toBe('calendar.read calendar.events');
    const exchanges = fake.exchanges;

    const page = await openCallback(await authorize(url.href));
    expect(page.status).toBe(200);
    expect(page.text).toContain('calendar account is connected');
    // The provider checked the PKCE verifier against the challenge before issuing tokens.
    expect(fake.exchanges).toBe(exchanges + 1);

    const list = await api(server.url, 'GET', '/v1/integrations', { token: alice });
    expect(list.status).toBe(200);
    expect(list.body.integrations).toEqual([
      {
        provider: 'calendar',
        status: 'connected',
        scopes: ['calendar.read', 'calendar.events'],
        expiresAt: expect.any(String),
        updatedAt: expect.any(String),
      },
    ]);
    const expiresIn = Date.parse(list.body.integrations[0].expiresAt) - Date.now();
    expect(expiresIn).toBeGreaterThan(3500_000);
    const [row] = (await rows()).filter((r) => r.user_id === ALICE);
    expect(row.enc_access.split('.')).toHaveLength(5); // JWE compact
    expect(JSON.parse(Buffer.from(row.enc_access.split('.')[0], 'base64url').toString())).toEqual({
      alg: 'dir',
      enc: 'A256GCM',
      kid: 't1',
    });
    expect(row.kid).toBe('t1');
    expect(await states()).toBe(0);

    // Another user sees nothing of it.
    const bob = await api(server.url, 'GET', '/v1/integrations', { token: await token(BOB) });
    expect(bob.body).toEqual({ integrations: [] });
  });

  it('connects a provider configured by its endpoint URLs instead of discovery', async () => {
    const url = await connectUrl('notes');
    const page = await openCallback(await authorize(url));
    expect(page.status).toBe(200);
    expect((await rows()).some((r) => r.user_id === ALICE && r.provider === 'notes')).toBe(true);
  });

  it('disconnects: revokes the refresh token at the provider, forgets the tokens, answers 204 (again 204)', async () => {
    const bob = await token(BOB);
    await openCallback(await authorize(await connectUrl('calendar', bob)));
    const revokedBefore = fake.revoked.length;
    const res = await api(server.url, 'DELETE', '/v1/integrations/calendar', { token: bob });
    expect(res.status).toBe(204);
    expect(fake.revoked.length).toBe(revokedBefore + 1);
    expect(fake.revoked.at(-1)).toMatch(/^rt_/);
    expect((await rows()).filter((r) => r.user_id === BOB)).toEqual([]);
    expect((await api(server.url, 'DELETE', '/v1/integrations/calendar', { token: bob })).status).toBe(204);
  });
});

describe('refusals of the integrations routes', () => {
  it('answers 401 without a token, 403 to a relay or admin token and to a share-link token', async () => {
    for (const [method, path] of [
      ['POST', '/v1/integrations/calendar/connect'],
      ['GET', '/v1/integrations'],
      ['DELETE', '/v1/integrations/calendar'],
    ]) {
      expect((await api(server.url, method, path)).status, path).toBe(401);
      for (const tok of [
        await token('relay-1', { role: 'relay' }),
        await token('admin-1', { role: 'admin' }),
        await token(ALICE, { sid: 'ms_x' }),
      ]) {
        const res = await api(server.url, method, path, { token: tok });
        expect(res.status, path).toBe(403);
        expect(res.body.error.code).toBe(Codes.forbidden);
      }
    }
  });

  it('answers 404 unknown_provider for a provider that is not configured, on every route', async () => {
    for (const [method, path] of [
      ['POST', '/v1/integrations/github/connect'],
      ['DELETE', '/v1/integrations/github'],
      ['POST', '/v1/integrations/NOT%20A%20NAME/connect'],
    ]) {
      const res = await api(server.url, method, path, { token: alice });
      expect(res.status, path).toBe(404);
      expect(res.body.error.code).toBe(Codes.unknown_provider);
    }
    const page = await openCallback('/v1/integrations/github/callback?code=x&state=y');
    expect([page.status, page.code]).toEqual([404, Codes.unknown_provider]);
  });

  it('answers 400 validation_failed to a callback without state or code, and keeps the state', async () => {
    const callback = await authorize(await connectUrl());
    const state = callback.searchParams.get('state') as string;
    const noState = await openCallback(`/v1/integrations/calendar/callback?code=abc`);
    expect([noState.status, noState.code]).toEqual([400, Codes.validation_failed]);
    const noCode = await openCallback(`/v1/integrations/calendar/callback?state=${encodeURIComponent(state)}`);
    expect([noCode.status, noCode.code]).toEqual([400, Codes.validation_failed]);
    expect(noCode.text).toContain('<!doctype html>');
    // The real callback still works: the state was not used up by the malformed ones.
    expect((await openCallback(callback)).status).toBe(200);
  });

  it('answers 400 invalid_state to a replayed state, and stores nothing the second time', async () => {
    const callback = await authorize(await connectUrl());
    expect((await openCallback(callback)).status).toBe(200);
    const before = await rows();
    const exchanges = fake.exchanges;
    const again = await openCallback(callback);
    expect([again.status, again.code]).toEqual([400, Codes.invalid_state]);
    expect(again.text).toContain('already used');
    expect(fake.exchanges).toBe(exchanges);
    expect(await rows()).toEqual(before);
  });

  it('answers 400 invalid_state to an expired state (after 10 minutes), and stores nothing', async () => {
    await reset();
    const callback = await authorize(await connectUrl());
    await db.pool.query("UPDATE oauth_states SET expires_at = now() - interval '1 second'");
    const page = await openCallback(callback);
    expect([page.status, page.code]).toEqual([400, Codes.invalid_state]);
    expect(page.text).toContain('expired');
    expect(await rows()).toEqual([]);
    expect(await states()).toBe(0);
  });

  it('answers 400 invalid_state to a forged state and to a state of another provider', async () => {
    await reset();
    const callback = await authorize(await connectUrl('notes'));
    const forged = new URL(callback);
    forged.searchParams.set('state', 'forged-state-of-an-attacker');
    expect((await openCallback(forged)).code).toBe(Codes.invalid_state);
    const elsewhere = new URL(callback);
    elsewhere.pathname = '/v1/integrations/calendar/callback';
    const page = await openCallback(elsewhere);
    expect([page.status, page.code]).toEqual([400, Codes.invalid_state]);
    expect(await rows()).toEqual([]);
  });

  it('answers 400 authorization_denied when the user declines at the provider', async () => {
    await reset();
    fake.behaviour.deny = true;
    const page = await openCallback(await authorize(await connectUrl()));
    expect([page.status, page.code]).toEqual([400, Codes.authorization_denied]);
    expect(await rows()).toEqual([]);
    expect(await states()).toBe(0);
  });

  it.each([
    ['answers 500', 'error500', 502, Codes.provider_error],
    ['answers garbage', 'garbage', 502, Codes.provider_error],
    ['hangs', 'hang', 504, Codes.provider_timeout],
    ['gives no expires_in', 'noExpiresIn', 502, Codes.provider_error],
  ] as const)(
    'answers a token endpoint that %s (%s) with %i %s and stores nothing',
    async (_what, failure, status, code) => {
      await reset();
      const callback = await authorize(await connectUrl());
      fake.behaviour.tokenFailure = failure;
      const page = await openCallback(callback);
      expect([page.status, page.code]).toEqual([status, code]);
      expect(page.text).toContain('nothing was stored');
      expect(await rows()).toEqual([]);
      expect(await states()).toBe(0);
    },
  );

  it('counts connections by outcome in /metrics', async () => {
    const text = (await api(server.url, 'GET', '/metrics')).body as string;
    expect(text).toMatch(/archety_oauth_connects_total\{provider="calendar",outcome="connected"\} [1-9]/);
    expect(text).toMatch(/archety_oauth_connects_total\{provider="calendar",outcome="invalid_state"\} [1-9]/);
    expect(text).toMatch(/archety_oauth_connects_total\{provider="calendar",outcome="timeout"\} 1/);
    expect(text).toContain('archety_circuit_breaker_state{dependency="oauth:calendar"}');
  });

  it('writes no token, code or state of the provider into the logs', async () => {
    expect(fake.issued.length).toBeGreaterThan(4);
    const log = lines.join('\n');
    expect(log).toContain('integration connected');
    for (const secret of fake.issued) expect(log).not.toContain(secret);
    expect(log).not.toMatch(/code_[A-Za-z0-9_-]{16}/);
  });
});

describe('integrations without a vault key', () => {
  it('answers 501 integrations_disabled when DATABASE_URL is set and VAULT_KEYS is not, and says so at start', async () => {
    const off = await startLoggedServer(db.url, fake.env('calendar'));
    const start = off.lines.find((l) => l.includes('archety listening on'));
    expect(start).toContain('integrations off');
    for (const [method, path] of [
      ['POST', '/v1/integrations/calendar/connect'],
      ['GET', '/v1/integrations'],
      ['DELETE', '/v1/integrations/calendar'],
    ]) {
      const res = await api(off.server.url, method, path, { token: alice });
      expect(res.status, path).toBe(501);
      expect(res.body.error.code).toBe(Codes.integrations_disabled);
    }
    expect((await api(off.server.url, 'GET', '/v1/integrations')).status).toBe(401);
    const page = await fetch(`${off.server.url}/v1/integrations/calendar/callback?code=a&state=b`);
    expect([page.status, page.headers.get('x-error-code')]).toEqual([501, Codes.integrations_disabled]);
    await off.server.close();
  });
});
