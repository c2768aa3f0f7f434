/**
 * The miniapp HTTP API (docs/protocol.md) and the web pages: the landing page (`GET /`: create a
 * trip, list yours) and the trip-planner page (`GET /miniapp/:id`), both one HTML shell and one
 * script that reads its token from the URL fragment or the tab's sessionStorage, never a query.
 *
 * Bodies are strict: an unknown field (e.g. `"members"` instead of `"participants"`) is refused
 * 400 `validation_failed` with its `path`, never silently ignored. Guards run on the request
 * line and headers, before any body is read. What each route does is the miniapp service's
 * (`src/miniapp/miniappService.ts`); this file speaks HTTP.
 *
 * `POST /v1/miniapps/:id/share-links`: a participant mints a link that opens this one trip for
 * whoever holds it (a token with `sid`), e.g. to paste in a group chat. Only a participant's own
 * token mints: a `sid` token is refused 403, even for its own session, so a link cannot breed
 * links; an unknown session is 404, a non-participant 403.
 */

import { z } from 'zod';
import { text } from '../../actors/wellFormedText.ts';
import type { Claims, VerifyToken } from '../auth/verifyToken.ts';
import type { MiniappService } from '../miniapp/miniappService.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { MiniappPage } from '../web/miniappPage.ts';
import { authenticateRequest } from './authenticate.ts';
import type { RequestHead, Router } from './http.ts';
import { parseWith } from './validate.ts';

const userId = text().min(1).max(200);

const createSchema = z
  .object({
    app: text().min(1).max(100),
    title: text().min(1).max(200).optional(),
    chat: text().min(1).max(200).optional(),
    participants: z.array(userId).max(100).optional(),
  })
  .strict();

const participantSchema = z.object({ user: userId }).strict();

/** The page of a session, as a path without any token (the page takes its token from the fragment). */
export function pageUrl(sessionId: string): string {
  return `/miniapp/${encodeURIComponent(sessionId)}`;
}

export interface MiniappRoutesDeps {
  router: Router;
  verify: VerifyToken;
  miniapps: MiniappService;
  metrics: Metrics;
  page: MiniappPage;
}

/** Largest body of the `/v1/miniapps` routes (docs/protocol.md), or `MAX_BODY_BYTES` when that is smaller. */
export const MINIAPP_BODY_BYTES = 64 * 1024;

export function registerMiniappRoutes(deps: MiniappRoutesDeps): void {
  const { router, verify, miniapps, metrics, page } = deps;

  /** A `user` token; a `sid` token only where `readsOwnSession` (GET of that session). */
  const asUser = (req: RequestHead, options: { readsOwnSession?: boolean } = {}) =>
    authenticateRequest(verify, metrics, req.headers, ['user'], {
      session: options.readsOwnSession ? req.params[0] : undefined,
    });
  /** Also 404 for an unknown session, 403 unless a participant or the holder of its `sid` token. */
  const participant =
    (options: { readsOwnSession?: boolean } = {}) =>
    async (req: RequestHead): Promise<Claims> => {
      const claims = await asUser(req, options);
      await miniapps.access(req.params[0], claims);
      return claims;
    };

  router.post(
    '/v1/miniapps',
    async (req) => {
      const created = await miniapps.create(req.auth.sub, parseWith(createSchema, req.body));
      return { status: 201, body: { ...created, url: pageUrl(created.id) } };
    },
    { guard: (req: RequestHead) => asUser(req), maxBodyBytes: MINIAPP_BODY_BYTES },
  );

  router.get('/v1/miniapps/:id', async (req) => ({ status: 200, body: await miniapps.read(req.params[0]) }), {
    guard: participant({ readsOwnSession: true }),
  });

  router.post(
    '/v1/miniapps/:id/participants',
    async (req) => {
      const id = req.params[0];
      const { user } = parseWith(participantSchema, req.body);
      return { status: 200, body: { id, participants: await miniapps.addParticipant(id, user) } };
    },
    { guard: participant(), maxBodyBytes: MINIAPP_BODY_BYTES },
  );

  router.post(
    '/v1/miniapps/:id/share-links',
    async (req) => {
      const id = req.params[0];
      const { token, expiresAt } = await miniapps.shareLink(id);
      return { status: 201, body: { id, url: `${pageUrl(id)}#token=${token}`, token, expiresAt } };
    },
    // No body: everything it needs is in the request line and the token.
    { guard: participant(), body: false },
  );

  const servePage = () => ({
    status: 200,
    raw: page.html,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy':
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'",
      'referrer-policy': 'no-referrer',
    },
  });
  router.get('/', servePage);
  router.get('/miniapp/:id', servePage);

  router.get('/miniapp-assets/client.js', async () => ({
    status: 200,
    raw: await page.script(),
    headers: { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-cache' },
  }));
}
