/**
 * `/v1/miniapp/:sessionId` on the wire: the caps on its sockets (per user, per session), its
 * frames parsed and checked, the per-socket op rate limit (resumes count against it too), and
 * the channel the miniapp actors write to (`MiniappSockets`, which coalesces presence). What a
 * frame does in its session is the miniapp service's (`src/miniapp/miniappService.ts`);
 * upgrade, limits and the error boundary are `socketEndpoint.ts`'s.
 */

import type { TemplatedApp, WebSocket } from 'uWebSockets.js';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import type { Claims, VerifyToken } from '../auth/verifyToken.ts';
import type { Config } from '../config.ts';
import { AppError, CloseCodes, Codes } from '../errors.ts';
import type { SocketCaps } from '../limits/socketCaps.ts';
import { TokenBucket } from '../limits/tokenBucket.ts';
import type { MiniappChannel } from '../miniapp/createMiniappKind.ts';
import { parseOpFrame, resumeFrameSchema } from '../miniapp/frameSchemas.ts';
import type { MiniappService } from '../miniapp/miniappService.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { authenticate, authenticateNow } from './authenticate.ts';
import { type BaseSocketData, createSocketEndpoint, type Endpoint } from './socketEndpoint.ts';
import { describeIssue, excerpt } from './validate.ts';

interface SocketData extends BaseSocketData {
  sessionId: string;
  ops: TokenBucket;
  /** Ops this socket sent so far: the next op's `seq`. */
  opsSent: number;
}

export interface MiniappSocketDeps {
  app: TemplatedApp;
  config: Config;
  verify: VerifyToken;
  miniapps: MiniappService;
  metrics: Metrics;
  log: Logger;
  /** Where the socket caps are counted (cluster mode: Redis); this process by default. */
  caps?: SocketCaps;
}

export function topicOf(sessionId: string): string {
  return `m:${sessionId}`;
}

/** Sockets by connection id; the channel the miniapp actors write to. */
export class MiniappSockets implements MiniappChannel {
  readonly byConn = new Map<string, WebSocket<SocketData>>();
  private app!: TemplatedApp;
  /** The latest presence frame of each session, published at the end of this event-loop turn. */
  private readonly presence = new Map<string, string>();
  private presenceScheduled = false;

  bind(app: TemplatedApp): void {
    this.app = app;
  }

  send(conn: string, frame: ServerFrame): void {
    const ws = this.byConn.get(conn);
    if (!ws) return;
    const text = JSON.stringify(frame);
    ws.cork(() => ws.send(text));
  }

  /**
   * To every socket of the session. Presence frames are coalesced per turn of the event loop:
   * a burst of joins costs each socket one frame (the latest `online`), not one per join,
   * which would grow with the square of the sockets.
   */
  publish(sessionId: string, frame: ServerFrame): void {
    if (frame.type !== 'presence') {
      this.app.publish(topicOf(sessionId), JSON.stringify(frame));
      return;
    }
    this.presence.set(sessionId, JSON.stringify(frame));
    if (this.presenceScheduled) return;
    this.presenceScheduled = true;
    setImmediate(() => {
      this.presenceScheduled = false;
      for (const [id, text] of this.presence) this.app.publish(topicOf(id), text);
      this.presence.clear();
    });
  }

  attach(conn: string, sessionId: string): void {
    this.byConn.get(conn)?.subscribe(topicOf(sessionId));
  }

  detach(conn: string, sessionId: string): void {
    const ws = this.byConn.get(conn);
    if (ws && !ws.getUserData().closed) ws.unsubscribe(topicOf(sessionId));
  }

  /** Every socket of a session is this process's: nothing to subscribe to. */
  async watch(): Promise<void> {}

  unwatch(): void {}

  /** No other process follows the session. */
  handOver(): void {}

  closeSession(sessionId: string, code: number, reason: string): void {
    for (const ws of [...this.byConn.values()]) {
      if (ws.getUserData().sessionId === sessionId) ws.end(code, reason);
    }
  }
}

export function registerMiniappSocket(deps: MiniappSocketDeps, sockets: MiniappSockets): Endpoint<SocketData> {
  const { config, verify, miniapps, metrics, log } = deps;
  const limits = config.limits;

  /** A new socket's data, once its token opened the session. */
  function socketData(claims: Claims, sessionId: string, conn: string): SocketData {
    return {
      conn,
      user: claims.sub,
      sessionId,
      expiresAt: claims.exp * 1000,
      ops: new TokenBucket(limits.maxOpsPerSecond, limits.maxOpsPerSecond),
      opsSent: 0,
      bad: [],
      closed: false,
    };
  }

  /** Spends one of the socket's op budget; answers `rate_limited` when it is spent. */
  function takeOp(ws: WebSocket<SocketData>, message: string, ref?: string): boolean {
    if (ws.getUserData().ops.take()) return true;
    metrics.rateLimited.inc({ scope: 'ops' });
    endpoint.sendError(ws, Codes.rate_limited, message, ref);
    return false;
  }

  const endpoint: Endpoint<SocketData> = createSocketEndpoint<SocketData>(deps, '/v1/miniapp/:sessionId', {
    async authorize({ params: [sessionId], token, conn }) {
      if (!sessionId || sessionId.length > 200) throw new AppError('session_not_found', 'no such session');
      const claims = await authenticate(verify, metrics, token, ['user']);
      await miniapps.access(sessionId, claims);
      return socketData(claims, sessionId, conn);
    },

    authorizeNow({ params: [sessionId], token, conn }) {
      if (!sessionId || sessionId.length > 200) return undefined;
      const claims = authenticateNow(verify, token, ['user']);
      return claims && miniapps.access.now(sessionId, claims) ? socketData(claims, sessionId, conn) : undefined;
    },

    caps: (d) => [
      {
        scope: 'sockets_user',
        key: `u:${d.user}`,
        max: limits.maxSocketsPerUser,
        message: `at most ${limits.maxSocketsPerUser} open sockets per user`,
      },
      {
        scope: 'sockets_session',
        key: `s:${d.sessionId}`,
        max: limits.maxSocketsPerSession,
        message: `at most ${limits.maxSocketsPerSession} open sockets per session`,
      },
    ],

    open(ws) {
      const d = ws.getUserData();
      sockets.byConn.set(d.conn, ws);
      miniapps.join(d.conn, d.user, d.sessionId).catch((err) => {
        log.warn({ err, conn: d.conn, session: d.sessionId }, 'session could not be opened');
        if (!d.closed) ws.end(CloseCodes.internalError, 'session unavailable');
      });
    },

    frame(ws, frame) {
      const d = ws.getUserData();
      if (frame.type === 'op') {
        const ref = typeof frame.opId === 'string' && frame.opId.length <= 200 ? frame.opId : undefined;
        const parsed = parseOpFrame(frame);
        if (!parsed.success) {
          endpoint.badFrame(ws, Codes.validation_failed, describeIssue(parsed.error.issues[0]).message, ref);
          return;
        }
        if (!takeOp(ws, `at most ${limits.maxOpsPerSecond} ops per second`, ref)) return;
        const f = parsed.data;
        miniapps.op(d.sessionId, {
          type: 'op',
          conn: d.conn,
          seq: ++d.opsSent,
          by: d.user,
          opId: f.opId,
          baseVersion: f.baseVersion,
          op: f.op,
          receivedAt: performance.timeOrigin + performance.now(),
        });
      } else if (frame.type === 'resume') {
        const parsed = resumeFrameSchema.safeParse(frame);
        if (!parsed.success) {
          endpoint.badFrame(ws, Codes.validation_failed, describeIssue(parsed.error.issues[0]).message);
          return;
        }
        // A resume can replay up to 1,000 frames: it spends the op budget like an op.
        if (!takeOp(ws, `at most ${limits.maxOpsPerSecond} ops and resumes per second`)) return;
        miniapps.resume(d.conn, d.sessionId, parsed.data.since);
      } else {
        endpoint.badFrame(ws, Codes.unknown_frame_type, `unknown frame type ${excerpt(frame.type)}`);
      }
    },

    close(ws) {
      const d = ws.getUserData();
      sockets.byConn.delete(d.conn);
      miniapps.leave(d.conn, d.sessionId);
    },
  });
  return endpoint;
}
