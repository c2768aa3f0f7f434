/**
 * Who may open a miniapp session, one rule for the HTTP routes and the socket: its
 * participants, or the holder of a token whose `sid` is that session (and no other). A live
 * session answers from its actor's participants, with no database round trip; a sleeping one
 * from the store. Unknown sessions are `session_not_found`, refusals `forbidden`, each
 * counted in `archety_auth_failures_total`.
 */
import type { MiniappContext } from '../../actors/miniappSession.ts';
import type { Claims } from '../auth/verifyToken.ts';
import { AppError } from '../errors.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { MiniappRepository } from '../store/miniappRepository.ts';
import { MINIAPP } from './createMiniappKind.ts';

export interface MiniappAccessDeps {
  host: ActorHost;
  repo: Pick<MiniappRepository, 'access'>;
  metrics: Metrics;
}

export interface MiniappAccess {
  (sessionId: string, claims: Claims): Promise<void>;
  /** True when `claims` may open live session `sessionId`, told without waiting; false when only the call can tell. */
  now(sessionId: string, claims: Claims): boolean;
}

export function createMiniappAccess({ host, repo, metrics }: MiniappAccessDeps): MiniappAccess {
  /** The participants of a live session, from its actor; undefined when it sleeps (or is none). */
  const liveParticipants = (sessionId: string) =>
    (host.peek(MINIAPP, sessionId)?.context as MiniappContext | undefined)?.participants;
  /** The rule: a share link opens its own session, any other token one its holder takes part in. */
  const opens = (sessionId: string, claims: Claims, participant: boolean) =>
    claims.sid !== undefined ? claims.sid === sessionId : participant;

  const now = (sessionId: string, claims: Claims): boolean => {
    const live = liveParticipants(sessionId);
    return live !== undefined && opens(sessionId, claims, live.includes(claims.sub));
  };
  const access = async (sessionId: string, claims: Claims): Promise<void> => {
    const live = liveParticipants(sessionId);
    const access = live
      ? { exists: true, participant: live.includes(claims.sub) }
      : await repo.access(sessionId, claims.sub);
    if (!access.exists) {
      metrics.authFailures.inc({ reason: 'not_found' });
      throw new AppError('session_not_found', `no miniapp session ${sessionId}`);
    }
    if (!opens(sessionId, claims, access.participant)) {
      metrics.authFailures.inc({ reason: 'forbidden' });
      throw new AppError(
        'forbidden',
        'this token does not open this session: only its participants or its share link may',
      );
    }
  };
  return Object.assign(access, { now });
}
