/**
 * The integrations API (docs/protocol.md "Integrations"): connect (`role: user` → the provider's
 * authorization URL), the provider's callback (no token: the single-use `state` is the proof;
 * answers a small HTML page, errors included, for the person's browser), the user's list, and
 * disconnect. What each does is the vault's (`src/integrations/TokenVault.ts`); this file
 * speaks HTTP. With integrations off (DATABASE_URL without VAULT_KEYS) every route answers
 * 501 `integrations_disabled` once the caller is authenticated.
 */
import type { VerifyToken } from '../auth/verifyToken.ts';
import { AppError, isAppError } from '../errors.ts';
import type { TokenVault } from '../integrations/TokenVault.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { authenticateRequest } from './authenticate.ts';
import type { Reply, RequestHead, Router } from './http.ts';

export interface IntegrationRoutesDeps {
  router: Router;
  verify: VerifyToken;
  metrics: Metrics;
  log: Logger;
  /** Undefined: integrations are off. */
  vault: TokenVault | undefined;
}

/** Provider names are the lower-case NAME of `OAUTH_<NAME>_CLIENT_ID`. */
const PROVIDER = /^[a-z][a-z0-9_]{0,39}$/;

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The small page the person's browser shows after the provider sent them back. */
function page(status: number, title: string, text: string, code?: string): Reply {
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}code{color:#666}</style>
</head><body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p>${code ? `<p><code>${escapeHtml(code)}</code></p>` : ''}</body></html>
`;
  const headers: Record<string, string> = {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    // The page carries no token, but the URL that led here carried a code and a state.
    'referrer-policy': 'no-referrer',
  };
  if (code) headers['x-error-code'] = code;
  return { status, raw: html, headers };
}

export function registerIntegrationRoutes(deps: IntegrationRoutesDeps): void {
  const { router, verify, metrics, log } = deps;
  const asUser = (req: RequestHead) => authenticateRequest(verify, metrics, req.headers, ['user']);

  /** The vault, or 501 when integrations are off. */
  const vaultOrOff = (): TokenVault => {
    if (!deps.vault) {
      throw new AppError(
        'integrations_disabled',
        'integrations are off on this server: set VAULT_KEYS to keep OAuth tokens',
      );
    }
    return deps.vault;
  };
  /** The `:provider` of the path, when it can name a provider; 404 otherwise. */
  const providerParam = (req: RequestHead): string => {
    const name = req.params[0];
    if (!PROVIDER.test(name))
      throw new AppError('unknown_provider', 'no provider of that name is configured on this server');
    return name;
  };

  router.post(
    '/v1/integrations/:provider/connect',
    async (req) => {
      const vault = vaultOrOff();
      const url = await vault.connect(req.auth.sub, providerParam(req));
      return { status: 200, body: { url }, headers: { 'cache-control': 'no-store' } };
    },
    { guard: asUser, body: false, name: '/v1/integrations/:provider/connect' },
  );

  router.get(
    '/v1/integrations/:provider/callback',
    async (req) => {
      try {
        const vault = vaultOrOff();
        const { provider } = await vault.callback(providerParam(req), req.query, req.reqId);
        return page(
          200,
          'Connected',
          `Your ${provider} account is connected. You can close this page and go back to your chat.`,
        );
      } catch (err) {
        if (!isAppError(err)) {
          log.error({ reqId: req.reqId, err }, 'the OAuth callback failed unexpectedly');
          return page(
            500,
            'Something went wrong',
            'Something went wrong on our side; nothing was stored. Ask to connect again.',
            'internal_error',
          );
        }
        if (err.status >= 500) log.warn({ reqId: req.reqId, code: err.code, err: err.cause ?? err }, err.message);
        return page(err.status, 'Not connected', `${err.message}.`, err.code);
      }
    },
    { name: '/v1/integrations/:provider/callback' },
  );

  router.get(
    '/v1/integrations',
    async (req) => {
      const vault = vaultOrOff();
      return { status: 200, body: { integrations: await vault.list(req.auth.sub) } };
    },
    { guard: asUser },
  );

  router.del(
    '/v1/integrations/:provider',
    async (req) => {
      const vault = vaultOrOff();
      await vault.disconnect(req.auth.sub, providerParam(req), req.reqId);
      return { status: 204 };
    },
    { guard: asUser, name: '/v1/integrations/:provider' },
  );
}
