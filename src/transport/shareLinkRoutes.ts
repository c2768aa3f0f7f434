/**
 * `POST /v1/miniapps/:id/share-links`: a participant mints a link that opens this one trip for
 * whoever holds it (a token with `sid`, docs/protocol.md "Tokens"), e.g. to paste in a group chat.
 *
 * What it guarantees: only a participant's own token mints (a `sid` token is refused 403, even
 * for its own session, so a link cannot breed links; an unknown session is 404, a
 * non-participant 403, all before any body); the token is signed only with this server's own
 * HS256 secret (`JWT_SECRET` or the embedded one), never anything else; a server that verifies
 * with `JWT_JWKS_URL` holds no signing key and answers 501 `share_links_unavailable`; every
 * link expires after `SHARE_LINK_TTL_S` (7 days). Each link gets a subject of its own
 * (`guest_…`), so its holder's edits are never attributed to the person who shared it.
 */

import { randomBytes } from 'node:crypto';
import type { JwtKey } from '../auth/jwtKey.ts';
import { mintToken } from '../auth/mintToken.ts';
import type { VerifyToken } from '../auth/verifyToken.ts';
import { AppError } from '../errors.ts';
import type { MiniappAccess } from '../miniapp/miniappAccess.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { MiniappRepository } from '../store/miniappRepository.ts';
import type { Router } from './http.ts';
import { miniappGuards, pageUrl } from './miniappRoutes.ts';

/** How long a share link opens its trip: 7 days, in seconds. */
export const SHARE_LINK_TTL_S = 7 * 24 * 3600;

export interface ShareLinkRoutesDeps {
  router: Router;
  verify: VerifyToken;
  repo: MiniappRepository;
  /** Who may open a session (`src/miniapp/miniappAccess.ts`). */
  access: MiniappAccess;
  metrics: Metrics;
  jwtKey: JwtKey;
  /** The claims every token of this server carries. */
  jwt: { issuer: string; audience: string };
}

export function registerShareLinkRoutes(deps: ShareLinkRoutesDeps): void {
  const { router, jwtKey } = deps;
  const { participant } = miniappGuards(deps);
  router.post(
    '/v1/miniapps/:id/share-links',
    async (req) => {
      if (!('secret' in jwtKey)) {
        throw new AppError(
          'share_links_unavailable',
          'this server verifies tokens with JWT_JWKS_URL and holds no key to sign them: mint a token with "sid" where your tokens are issued',
        );
      }
      const id = req.params[0];
      const token = await mintToken({
        secret: jwtKey.secret,
        issuer: deps.jwt.issuer,
        audience: deps.jwt.audience,
        sub: `guest_${randomBytes(9).toString('base64url')}`,
        sid: id,
        ttlS: SHARE_LINK_TTL_S,
      });
      const expiresAt = new Date((Math.floor(Date.now() / 1000) + SHARE_LINK_TTL_S) * 1000).toISOString();
      return { status: 201, body: { id, url: `${pageUrl(id)}#token=${token}`, token, expiresAt } };
    },
    // No body: everything it needs is in the request line and the token.
    { guard: participant(), body: false },
  );
}
