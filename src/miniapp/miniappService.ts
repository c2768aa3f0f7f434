/**
 * Miniapp sessions as the transport sees them. HTTP routes and the socket parse what clients
 * send and call this; this speaks to the actor host and the store. Nothing here knows of
 * requests, frames on the wire or uWebSockets.js: the sockets are a `MiniappChannel`.
 *
 * - `access`: who may open a session (participants, or the holder of its `sid` token).
 * - `create`, `read`, `addParticipant`, `shareLink`: the HTTP API's work.
 * - `join`, `op`, `resume`, `leave`: a socket's life in a session. Ops that arrive in one turn
 *   of the event loop reach the session's actor as one `ops` message (a burst costs one
 *   transition, not one per op); any other message for the session first sends the waiting ops
 *   on, so the session sees each socket's frames in the order they came. A frame that cannot
 *   reach the session is answered on its socket with an `error` frame.
 *
 * Cluster mode routes these same calls to the node that owns the session.
 */
import { randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import { miniapps } from '../../actors/apps/index.ts';
import type { MiniappEvent, MiniappView } from '../../actors/miniapp.machine.ts';
import type { OpRequest } from '../../actors/miniappSession.ts';
import { validate } from '../../actors/schema.ts';
import type { JwtKey } from '../auth/jwtKey.ts';
import { mintToken } from '../auth/mintToken.ts';
import { AppError, Codes, isAppError } from '../errors.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { GroupCommitter } from '../store/GroupCommitter.ts';
import type { MiniappRepository } from '../store/miniappRepository.ts';
import { createMiniappKind, MINIAPP, type MiniappChannel } from './createMiniappKind.ts';
import { createMiniappAccess, type MiniappAccess } from './miniappAccess.ts';

/** How long a share link opens its trip: 7 days, in seconds. */
export const SHARE_LINK_TTL_S = 7 * 24 * 3600;

export interface NewSession {
  app: string;
  title?: string;
  chat?: string;
  /** Besides the owner, who is always one. */
  participants?: string[];
}

export interface CreatedSession {
  id: string;
  app: string;
  version: 0;
  state: unknown;
  participants: string[];
}

export interface ShareLink {
  /** A `user` token whose `sid` is the session, for a subject of its own (`guest_…`). */
  token: string;
  expiresAt: string;
}

export interface MiniappService {
  /** Resolves when `claims` may open `sessionId`; `session_not_found` or `forbidden` otherwise. */
  access: MiniappAccess;
  create(owner: string, session: NewSession): Promise<CreatedSession>;
  read(sessionId: string): Promise<MiniappView>;
  /** Adds `user` (idempotent); resolves with the participants after it. */
  addParticipant(sessionId: string, user: string): Promise<string[]>;
  shareLink(sessionId: string): Promise<ShareLink>;
  /** Attaches socket `conn` of `user`; it receives a snapshot, then the session's frames. */
  join(conn: string, user: string, sessionId: string): Promise<void>;
  /** Queues an op for this turn's batch of its session. */
  op(sessionId: string, request: OpRequest): void;
  resume(conn: string, sessionId: string, since: number): void;
  leave(conn: string, sessionId: string): void;
  /**
   * Cluster mode: `sessionId`'s previous owner handed it over (it drained). This process's
   * sockets of the session join its next owner, so they count as online there.
   */
  rejoin(sessionId: string): void;
}

export interface MiniappServiceDeps {
  host: ActorHost;
  repo: MiniappRepository;
  committer: GroupCommitter;
  /** The sockets of the sessions. */
  channel: MiniappChannel;
  metrics: Metrics;
  log: Logger;
  /** Share links are signed with the server's own HS256 secret; a JWKS-verifying server has none. */
  jwtKey: JwtKey;
  /** The claims every token of this server carries. */
  jwt: { issuer: string; audience: string };
}

export function newSessionId(): string {
  return `ms_${randomBytes(12).toString('base64url')}`;
}

/** Registers the miniapp kind with the host and returns the service over it. */
export function createMiniappService(deps: MiniappServiceDeps): MiniappService {
  const { host, repo, channel, metrics, log } = deps;
  host.register(createMiniappKind(deps));
  const access = createMiniappAccess({ host, repo, metrics });

  /** Tells the sockets of `refs` that their frames could not be handed to the session. */
  function undeliverable(err: Error, refs: { conn: string; ref?: string }[]): void {
    if (!isAppError(err)) log.error({ err, conns: refs.length }, 'delivering frames failed');
    const code = isAppError(err) ? err.code : Codes.internal_error;
    const message = isAppError(err) ? err.message : 'the frame could not be handled';
    for (const { conn, ref } of refs)
      channel.send(conn, ref === undefined ? { type: 'error', code, message } : { type: 'error', code, message, ref });
  }

  /**
   * This process's sockets whose session is watched (`channel.watch`) or being watched, and
   * which of them have joined (their session's actor counts them as online).
   */
  const sockets = new Map<string, { sessionId: string; user: string; state: 'pending' | 'watching' | 'joined' }>();
  const batches = new Map<string, OpRequest[]>();
  let flushScheduled = false;
  function flush(sessionId: string): void {
    const requests = batches.get(sessionId);
    if (!requests) return;
    batches.delete(sessionId);
    host.post(MINIAPP, sessionId, { type: 'ops', requests }, (err) =>
      undeliverable(
        err,
        requests.map((r) => ({ conn: r.conn, ref: r.opId })),
      ),
    );
  }
  function flushAll(): void {
    flushScheduled = false;
    for (const sessionId of [...batches.keys()]) flush(sessionId);
  }

  /** Hands a message other than an op to the session's actor, after the ops before it. */
  function deliver(sessionId: string, conn: string, event: MiniappEvent): void {
    flush(sessionId);
    host.post(MINIAPP, sessionId, event, (err) => undeliverable(err, [{ conn }]));
  }

  return {
    access,

    async create(owner, session) {
      const app = miniapps.get(session.app);
      if (!app)
        throw new AppError(
          'unknown_app',
          `unknown app "${session.app}"; this server hosts ${[...miniapps.keys()].join(', ')}`,
          { path: ['app'] },
        );
      const state = app.initialState({ title: session.title });
      const issue = validate(app.schema, state);
      if (issue) throw new AppError('validation_failed', issue.message, { path: issue.path });
      const id = newSessionId();
      const participants = [...new Set([owner, ...(session.participants ?? [])])];
      await repo.create({ id, app: app.name, owner, chat: session.chat ?? null, state, participants });
      return { id, app: app.name, version: 0, state, participants };
    },

    read: (sessionId) => host.ask<MiniappView>(MINIAPP, sessionId, (reply) => ({ type: 'read', reply })),

    async addParticipant(sessionId, user) {
      const err = await host.ask<Error | undefined>(MINIAPP, sessionId, (reply) => ({
        type: 'addParticipant',
        user,
        reply,
      }));
      if (err) throw err;
      return (await this.read(sessionId)).participants;
    },

    async shareLink(sessionId) {
      const { jwtKey, jwt } = deps;
      if (!('secret' in jwtKey)) {
        throw new AppError(
          'share_links_unavailable',
          'this server verifies tokens with JWT_JWKS_URL and holds no key to sign them: mint a token with "sid" where your tokens are issued',
        );
      }
      const token = await mintToken({
        secret: jwtKey.secret,
        issuer: jwt.issuer,
        audience: jwt.audience,
        // Its own subject: the link holder's edits are never attributed to whoever shared it.
        sub: `guest_${randomBytes(9).toString('base64url')}`,
        sid: sessionId,
        ttlS: SHARE_LINK_TTL_S,
      });
      // The token's own expiry: computed again here, it was a second later when minting crossed one.
      const expiresAt = new Date((decodeJwt(token).exp as number) * 1000).toISOString();
      return { token, expiresAt };
    },

    async join(conn, user, sessionId) {
      // Subscribed before the join: the frames published after its snapshot must reach it.
      const socket = { sessionId, user, state: 'pending' as 'pending' | 'watching' | 'joined' };
      sockets.set(conn, socket);
      try {
        await channel.watch(sessionId);
      } catch (err) {
        sockets.delete(conn);
        throw err;
      }
      // The socket closed while its session was being watched: undone now.
      if (sockets.get(conn) !== socket) return channel.unwatch(sessionId);
      socket.state = 'watching';
      flush(sessionId);
      await host.send(MINIAPP, sessionId, { type: 'join', conn, user });
      socket.state = 'joined';
    },

    rejoin(sessionId) {
      const conns = [...sockets]
        .filter(([, s]) => s.sessionId === sessionId && s.state === 'joined')
        .map(([conn, { user }]) => ({ conn, user }));
      if (!conns.length) return;
      // Sent (not posted): its previous owner may stop listening before it refuses it, and a
      // send waiting for an answer goes to the next owner once the lease moved.
      host
        .send(MINIAPP, sessionId, { type: 'rejoin', conns })
        .catch((err) =>
          log.warn({ err, session: sessionId }, 'sockets could not rejoin a session handed over; presence misses them'),
        );
    },

    op(sessionId, request) {
      const requests = batches.get(sessionId);
      if (requests) requests.push(request);
      else batches.set(sessionId, [request]);
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flushAll);
      }
    },

    resume(conn, sessionId, since) {
      deliver(sessionId, conn, { type: 'resume', conn, since });
    },

    leave(conn, sessionId) {
      const state = sockets.get(conn)?.state;
      if (state === 'watching' || state === 'joined') channel.unwatch(sessionId);
      sockets.delete(conn);
      flush(sessionId);
      // An actor that is gone holds no sockets: only a live one needs to hear of the leave.
      host.tell(MINIAPP, sessionId, { type: 'leave', conn });
    },
  };
}
