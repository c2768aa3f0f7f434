/**
 * A small OAuth 2.0 authorization server of the tests' own, over plain HTTP on 127.0.0.1:
 * OpenID discovery, an authorize endpoint that approves at once (or declines), a token
 * endpoint that checks client authentication and PKCE (S256) and refreshes with rotation (a
 * used refresh token is dead), and revocation. Tests switch its token endpoint's failures
 * (500, a hang, garbage, no `expires_in`, `invalid_grant`) and read what it counted: refreshes
 * per refresh token (a token refreshed twice, or two refreshes of one token at once, shows).
 *
 * Tests start it with `startFakeOAuthProvider` (`fakeOAuthProvider.ts`, closed after the file's
 * tests). Run as a program (`npm run fake-oauth`) it serves on FAKE_OAUTH_PORT (default 9400)
 * with client `archety-dev` / `dev-secret`, for the README's worked example.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export type TokenFailure = 'error500' | 'hang' | 'garbage' | 'noExpiresIn' | 'invalidGrant' | null;

export interface FakeOAuthBehaviour {
  /** How the token endpoint fails (both grants). */
  tokenFailure: TokenFailure;
  /** Only this many token requests fail (then they are answered); unset: all of them. */
  tokenFailureCount?: number;
  /** `expires_in` of issued access tokens (s). */
  expiresIn: number;
  /** Whether a refresh issues a new refresh token (the old one dies). */
  rotate: boolean;
  /** The authorize endpoint sends the user back with `error=access_denied`. */
  deny: boolean;
  /** Delay before answering a refresh (ms). */
  refreshDelayMs: number;
}

export interface FakeOAuthProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  behaviour: FakeOAuthBehaviour;
  /** Every token this provider issued (access and refresh), to look for in dumps and logs. */
  issued: string[];
  /** Successful refreshes, by the refresh token used. */
  refreshesByToken: Map<string, number>;
  /** Refresh requests answered (any outcome). */
  refreshRequests: number;
  /** Most refreshes in progress at once for one token. */
  maxConcurrentPerToken: number;
  /** Code exchanges answered with tokens. */
  exchanges: number;
  /** Tokens revoked at the revocation endpoint. */
  revoked: string[];
  /** A refresh token this provider accepts, as if issued by an earlier connection. */
  mintRefreshToken(): string;
  /** Environment variables for a server using this provider as `name` (OAUTH_<NAME>_…). */
  env(name: string, options?: { discovery?: boolean }): Record<string, string>;
  close(): Promise<void>;
}

const b64url = (n: number) => randomBytes(n).toString('base64url');

interface PendingCode {
  clientId: string;
  redirectUri: string;
  challenge: string;
  scope: string;
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

export async function listenFakeOAuthProvider(
  options: Partial<FakeOAuthBehaviour> = {},
  listen: { port?: number; clientId?: string; clientSecret?: string } = {},
): Promise<FakeOAuthProvider> {
  const codes = new Map<string, PendingCode>();
  /** Live refresh tokens → their scope. */
  const refreshTokens = new Map<string, string>();
  const inFlight = new Map<string, number>();
  const hanging = new Set<http.ServerResponse>();
  const fake: FakeOAuthProvider = {
    issuer: '',
    clientId: listen.clientId ?? 'archety-test-client',
    clientSecret: listen.clientSecret ?? `secret-${b64url(12)}`,
    behaviour: {
      tokenFailure: null,
      expiresIn: 3600,
      rotate: true,
      deny: false,
      refreshDelayMs: 0,
      ...options,
    },
    issued: [],
    refreshesByToken: new Map(),
    refreshRequests: 0,
    maxConcurrentPerToken: 0,
    exchanges: 0,
    revoked: [],
    mintRefreshToken() {
      const token = `rt_${b64url(24)}`;
      refreshTokens.set(token, 'calendar.read');
      fake.issued.push(token);
      return token;
    },
    env(name, o = {}) {
      const N = name.toUpperCase();
      const urls =
        o.discovery === false
          ? {
              [`OAUTH_${N}_AUTHORIZATION_URL`]: `${fake.issuer}/authorize`,
              [`OAUTH_${N}_TOKEN_URL`]: `${fake.issuer}/token`,
              [`OAUTH_${N}_REVOCATION_URL`]: `${fake.issuer}/revoke`,
            }
          : { [`OAUTH_${N}_ISSUER`]: fake.issuer };
      return {
        [`OAUTH_${N}_CLIENT_ID`]: fake.clientId,
        [`OAUTH_${N}_CLIENT_SECRET`]: fake.clientSecret,
        [`OAUTH_${N}_SCOPES`]: 'calendar.read calendar.events',
        ...urls,
      };
    },
    close: async () => {},
  };

  function json(res: http.ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  }

  function issue(scope: string, withRefresh: boolean): Record<string, unknown> {
    const access = `at_${b64url(24)}`;
    fake.issued.push(access);
    const body: Record<string, unknown> = { access_token: access, token_type: 'Bearer', scope };
    if (fake.behaviour.tokenFailure !== 'noExpiresIn') body.expires_in = fake.behaviour.expiresIn;
    if (withRefresh) {
      const refresh = `rt_${b64url(24)}`;
      refreshTokens.set(refresh, scope);
      fake.issued.push(refresh);
      body.refresh_token = refresh;
    }
    return body;
  }

  /** Applies a switched-on failure; true when it answered (or will never answer). */
  function failed(res: http.ServerResponse): boolean {
    const b = fake.behaviour;
    if (!b.tokenFailure || b.tokenFailure === 'noExpiresIn') return false;
    if (b.tokenFailureCount !== undefined) {
      if (b.tokenFailureCount <= 0) return false;
      b.tokenFailureCount--;
    }
    if (b.tokenFailure === 'hang') {
      hanging.add(res);
      return true;
    }
    if (b.tokenFailure === 'error500') {
      res.writeHead(500, { 'content-type': 'text/html' });
      res.end('<html><body>Internal Server Error</body></html>');
    } else if (b.tokenFailure === 'garbage') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"access_token": 42, "this is": not json');
    } else json(res, 400, { error: 'invalid_grant', error_description: 'the grant was revoked' });
    return true;
  }

  function clientOk(req: http.IncomingMessage): boolean {
    const m = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const [id, secret] = Buffer.from(m[1], 'base64').toString().split(':').map(decodeURIComponent);
    return id === fake.clientId && secret === fake.clientSecret;
  }

  async function token(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const form = new URLSearchParams(await readBody(req));
    if (!clientOk(req)) return json(res, 401, { error: 'invalid_client' });
    const grant = form.get('grant_type');
    if (grant === 'authorization_code') {
      if (failed(res)) return;
      const code = codes.get(form.get('code') ?? '');
      codes.delete(form.get('code') ?? '');
      const verifier = form.get('code_verifier') ?? '';
      const challenge = createHash('sha256').update(verifier).digest('base64url');
      if (!code || code.redirectUri !== form.get('redirect_uri') || code.challenge !== challenge) {
        return json(res, 400, { error: 'invalid_grant', error_description: 'bad code, redirect_uri or PKCE verifier' });
      }
      fake.exchanges++;
      return json(res, 200, issue(code.scope, true));
    }
    if (grant === 'refresh_token') {
      fake.refreshRequests++;
      const used = form.get('refresh_token') ?? '';
      const now = (inFlight.get(used) ?? 0) + 1;
      inFlight.set(used, now);
      fake.maxConcurrentPerToken = Math.max(fake.maxConcurrentPerToken, now);
      try {
        if (fake.behaviour.refreshDelayMs) await new Promise((r) => setTimeout(r, fake.behaviour.refreshDelayMs));
        if (failed(res)) return;
        const scope = refreshTokens.get(used);
        if (scope === undefined)
          return json(res, 400, { error: 'invalid_grant', error_description: 'unknown refresh token' });
        fake.refreshesByToken.set(used, (fake.refreshesByToken.get(used) ?? 0) + 1);
        if (fake.behaviour.rotate) {
          refreshTokens.delete(used);
          return json(res, 200, issue(scope, true));
        }
        return json(res, 200, issue(scope, false));
      } finally {
        inFlight.set(used, (inFlight.get(used) ?? 1) - 1);
      }
    }
    return json(res, 400, { error: 'unsupported_grant_type' });
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', fake.issuer);
    if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
      return json(res, 200, {
        issuer: fake.issuer,
        authorization_endpoint: `${fake.issuer}/authorize`,
        token_endpoint: `${fake.issuer}/token`,
        revocation_endpoint: `${fake.issuer}/revoke`,
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
      });
    }
    if (req.method === 'GET' && url.pathname === '/authorize') {
      const q = url.searchParams;
      const back = new URL(q.get('redirect_uri') ?? '');
      back.searchParams.set('state', q.get('state') ?? '');
      if (fake.behaviour.deny) back.searchParams.set('error', 'access_denied');
      else if (q.get('client_id') !== fake.clientId || q.get('code_challenge_method') !== 'S256') {
        back.searchParams.set('error', 'invalid_request');
      } else {
        const code = `code_${b64url(16)}`;
        codes.set(code, {
          clientId: q.get('client_id') ?? '',
          redirectUri: q.get('redirect_uri') ?? '',
          challenge: q.get('code_challenge') ?? '',
          scope: q.get('scope') ?? '',
        });
        back.searchParams.set('code', code);
      }
      res.writeHead(302, { location: back.href });
      return res.end();
    }
    if (req.method === 'POST' && url.pathname === '/token') {
      token(req, res).catch(() => json(res, 500, { error: 'server_error' }));
      return;
    }
    if (req.method === 'POST' && url.pathname === '/revoke') {
      readBody(req).then((body) => {
        const t = new URLSearchParams(body).get('token') ?? '';
        fake.revoked.push(t);
        refreshTokens.delete(t);
        res.writeHead(200);
        res.end();
      });
      return;
    }
    json(res, 404, { error: 'not_found' });
  });
  await new Promise<void>((r) => server.listen(listen.port ?? 0, '127.0.0.1', () => r()));
  fake.issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.close = () =>
    new Promise<void>((r) => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      server.close(() => r());
    });
  return fake;
}

/**
 * Follows a connect URL the way a browser would: the provider's authorize endpoint redirects to
 * the callback; returns the callback URL (with its code and state) without opening it.
 */
export async function authorize(connectUrl: string): Promise<URL> {
  const res = await fetch(connectUrl, { redirect: 'manual' });
  const location = res.headers.get('location');
  if (res.status !== 302 || !location) throw new Error(`authorize answered ${res.status}`);
  return new URL(location);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const fake = await listenFakeOAuthProvider(
    {},
    { port: Number(process.env.FAKE_OAUTH_PORT ?? 9400), clientId: 'archety-dev', clientSecret: 'dev-secret' },
  );
  process.stdout.write(
    `fake OAuth provider at ${fake.issuer}: approves every authorization at once, checks PKCE, rotates refresh tokens\n` +
      `start the server with:\n${Object.entries(fake.env('calendar'))
        .map(([k, v]) => `  ${k}=${JSON.stringify(v)}`)
        .join('\n')}\n`,
  );
}
