/** Where tokens come from (HTTP bearer header, WebSocket subprotocol or query) and role checks. */
import type { Claims, Role, VerifyToken } from '../auth/verifyToken.ts';
import { AuthError } from '../auth/verifyToken.ts';
import { AppError } from '../errors.ts';
import type { Metrics } from '../observability/metrics.ts';

export const SUBPROTOCOL = 'archety.v1';
const BEARER_PREFIX = 'bearer.';

/** The token of `Authorization: Bearer <jwt>`, if any. */
export function bearerToken(authorization: string | undefined): string | undefined {
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization ?? '');
  return m ? m[1] : undefined;
}

/**
 * The token offered on a WebSocket upgrade: the `bearer.<jwt>` entry of
 * `Sec-WebSocket-Protocol` (preferred) or `?token=`; and the subprotocol to answer with.
 */
export function upgradeToken(protocolHeader: string, queryToken: string): { token?: string; protocol: string } {
  const offered = protocolHeader ? protocolHeader.split(',').map((p) => p.trim()) : [];
  const bearer = offered.find((p) => p.startsWith(BEARER_PREFIX));
  const protocol = offered.includes(SUBPROTOCOL) ? SUBPROTOCOL : '';
  return { token: bearer ? bearer.slice(BEARER_PREFIX.length) : queryToken || undefined, protocol };
}

/** Verifies the token and checks its role; counts refusals by reason. */
export async function authenticate(
  verify: VerifyToken,
  metrics: Metrics,
  token: string | undefined,
  roles: readonly Role[],
): Promise<Claims> {
  let claims: Claims;
  try {
    claims = await verify(token);
  } catch (err) {
    metrics.authFailures.inc({ reason: err instanceof AuthError ? err.reason : 'error' });
    throw err;
  }
  if (!roles.includes(claims.role)) {
    metrics.authFailures.inc({ reason: 'wrong_role' });
    throw new AppError('forbidden', `this needs a token with role ${roles.join(' or ')}`);
  }
  return claims;
}

/**
 * The claims of a token with one of `roles`, told without waiting (`VerifyToken.now`);
 * undefined when only `authenticate` can tell (refusals included: they are counted there).
 */
export function authenticateNow(
  verify: VerifyToken,
  token: string | undefined,
  roles: readonly Role[],
): Claims | undefined {
  const claims = verify.now(token);
  return claims && roles.includes(claims.role) ? claims : undefined;
}

/**
 * A token that carries `sid` (a share link) opens that one session and nothing else: refused
 * with 403 unless `session` names that same session. Every authenticated route and socket
 * calls it, so a route opts in (passes its session), never out.
 */
export function checkSidScope(metrics: Metrics, claims: Claims, session?: string): void {
  if (claims.sid === undefined || claims.sid === session) return;
  metrics.authFailures.inc({ reason: 'sid_scope' });
  throw new AppError('forbidden', 'a share link opens its own session and nothing else');
}

/**
 * The HTTP guard: verifies the bearer token of a request and checks its role and its `sid`
 * scope (`session`: the session this request reads, where a share link may read it).
 */
export async function authenticateRequest(
  verify: VerifyToken,
  metrics: Metrics,
  headers: Record<string, string>,
  roles: readonly Role[],
  options: { session?: string } = {},
): Promise<Claims> {
  const claims = await authenticate(verify, metrics, bearerToken(headers.authorization), roles);
  checkSidScope(metrics, claims, options.session);
  return claims;
}
