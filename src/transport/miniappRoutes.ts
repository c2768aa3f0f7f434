/**
 * The miniapp HTTP API (docs/protocol.md) and the web pages: the landing page (`GET /`: create a
 * trip, list yours) and the trip-planner page (`GET /miniapp/:id`), both one HTML shell and one
 * script that reads its token from the URL fragment or the tab's sessionStorage, never a query.
 *
 * Bodies are strict: an unknown field (e.g. `"members"` instead of `"participants"`) is refused
 * 400 `validation_failed` with its `path`, never silently ignored.
 */

import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { miniapps } from '../../actors/apps/index.ts';
import type { MiniappView } from '../../actors/miniapp.machine.ts';
import { validate } from '../../actors/schema.ts';
import { text } from '../../actors/wellFormedText.ts';
import type { Claims, VerifyToken } from '../auth/verifyToken.ts';
import { AppError } from '../errors.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import { MINIAPP } from '../miniapp/createMiniappKind.ts';
import type { MiniappAccess } from '../miniapp/miniappAccess.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { MiniappRepository } from '../store/miniappRepository.ts';
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
  repo: MiniappRepository;
  host: ActorHost;
  /** Who may open a session (`src/miniapp/miniappAccess.ts`). */
  access: MiniappAccess;
  metrics: Metrics;
  page: MiniappPage;
}

/** Largest body of the `/v1/miniapps` routes (docs/protocol.md), or `MAX_BODY_BYTES` when that is smaller. */
export const MINIAPP_BODY_BYTES = 64 * 1024;

export function newSessionId(): string {
  return `ms_${randomBytes(12).toString('base64url')}`;
}

/**
 * The guards of the miniapp routes, decided from the request line and headers alone. `asUser`:
 * a `user` token (a `sid` token only where `readsOwnSession`: GET of that session).
 * `participant`: also 404 for an unknown session, 403 unless a participant (or the holder of
 * its `sid` token); the session id is the route's first parameter.
 */
export function miniappGuards(deps: Pick<MiniappRoutesDeps, 'verify' | 'metrics' | 'access'>) {
  const { verify, metrics, access } = deps;
  const asUser = (req: RequestHead, options: { readsOwnSession?: boolean } = {}) =>
    authenticateRequest(verify, metrics, req.headers, ['user'], {
      session: options.readsOwnSession ? req.params[0] : undefined,
    });

  const participant =
    (options: { readsOwnSession?: boolean } = {}) =>
    async (req: RequestHead): Promise<Claims> => {
      const claims = await asUser(req, options);
      await access(req.params[0], claims);
      return claims;
    };
  return { asUser, participant };
}

export function registerMiniappRoutes(deps: MiniappRoutesDeps): void {
  const { router, repo, host, page } = deps;
  const { asUser, participant } = miniappGuards(deps);

  const read = (id: string) => host.ask<MiniappView>(MINIAPP, id, (reply) => ({ type: 'read', reply }));

  router.post(
    '/v1/miniapps',
    async (req) => {
      const claims = req.auth;
      const body = parseWith(createSchema, req.body);
      const app = miniapps.get(body.app);
      if (!app)
        throw new AppError(
          'unknown_app',
          `unknown app "${body.app}"; this server hosts ${[...miniapps.keys()].join(', ')}`,
          { path: ['app'] },
        );
      const state = app.initialState({ title: body.title });
      const issue = validate(app.schema, state);
      if (issue) throw new AppError('validation_failed', issue.message, { path: issue.path });
      const id = newSessionId();
      const participants = [...new Set([claims.sub, ...(body.participants ?? [])])];
      await repo.create({ id, app: app.name, owner: claims.sub, chat: body.chat ?? null, state, participants });
      return { status: 201, body: { id, app: app.name, version: 0, state, participants, url: pageUrl(id) } };
    },
    { guard: (req: RequestHead) => asUser(req), maxBodyBytes: MINIAPP_BODY_BYTES },
  );

  router.get('/v1/miniapps/:id', async (req) => ({ status: 200, body: await read(req.params[0]) }), {
    guard: participant({ readsOwnSession: true }),
  });

  router.post(
    '/v1/miniapps/:id/participants',
    async (req) => {
      const id = req.params[0];
      const { user } = parseWith(participantSchema, req.body);
      await host
        .ask<Error | undefined>(MINIAPP, id, (reply) => ({ type: 'addParticipant', user, reply }))
        .then((err) => {
          if (err) throw err;
        });
      const view = await read(id);
      return { status: 200, body: { id, participants: view.participants } };
    },
    { guard: participant(), maxBodyBytes: MINIAPP_BODY_BYTES },
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
