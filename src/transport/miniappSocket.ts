/**
 * `/v1/miniapp/:sessionId` on uWebSockets.js: authentication and authorization in the
 * upgrade handler (no socket exists before both pass), frame validation, per-socket rate
 * limits, token expiry, and the session channel the miniapp actors write to. This file is the
 * socket's error boundary: bad frames get `error` frames and the socket stays open, floods of
 * them and expired tokens close it with 1008.
 */
import type { HttpResponse, TemplatedApp, WebSocket, us_socket_context_t } from 'uWebSockets.js';
import type { MiniappEvent } from '../../actors/miniapp.machine.ts';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import type { VerifyToken } from '../auth/verifyToken.ts';
import type { Config } from '../config.ts';
import { AppError, CloseCodes, Codes, type ErrorCode, isAppError } from '../errors.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import { MINIAPP, type MiniappChannel } from '../miniapp/createMiniappKind.ts';
import { opFrameSchema, resumeFrameSchema } from '../miniapp/frameSchemas.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { MiniappRepository } from '../store/miniappRepository.ts';
import { authenticate, upgradeToken } from './authenticate.ts';
import { errorReply, remoteAddress, statusLine } from './http.ts';
import { KeyedLimiter, TokenBucket } from './tokenBucket.ts';
import { describeIssue } from './validate.ts';

interface SocketData {
  conn: string;
  user: string;
  sessionId: string;
  /** Token expiry, ms since the epoch. */
  expiresAt: number;
  ops: TokenBucket;
  /** Times (ms) of recent bad frames, for the flood limit. */
  bad: number[];
  expiry?: NodeJS.Timeout;
  closed: boolean;
}

const BAD_FRAME_LIMIT = 100;
const BAD_FRAME_WINDOW_MS = 60_000;
/** Frames over MAX_FRAME_BYTES × this close the socket with 1009 (PROTOCOL.md). */
const CLOSE_FRAME_FACTOR = 16;
/** uWebSockets.js' own limit, as a multiple of MAX_FRAME_BYTES. */
const TRANSPORT_FRAME_FACTOR = 32;
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface MiniappSocketDeps {
  app: TemplatedApp;
  config: Config;
  verify: VerifyToken;
  repo: MiniappRepository;
  host: ActorHost;
  metrics: Metrics;
  log: Logger;
}

export function topicOf(sessionId: string): string {
  return `m:${sessionId}`;
}

/** Sockets by connection id; the channel the miniapp actors write to. */
export class MiniappSockets implements MiniappChannel {
  readonly byConn = new Map<string, WebSocket<SocketData>>();
  private app!: TemplatedApp;

  bind(app: TemplatedApp): void {
    this.app = app;
  }

  send(conn: string, frame: ServerFrame): void {
    const ws = this.byConn.get(conn);
    if (!ws) return;
    const text = JSON.stringify(frame);
    ws.cork(() => ws.send(text));
  }

  publish(sessionId: string, frame: ServerFrame): void {
    this.app.publish(topicOf(sessionId), JSON.stringify(frame));
  }

  attach(conn: string, sessionId: string): void {
    this.byConn.get(conn)?.subscribe(topicOf(sessionId));
  }

  detach(conn: string, sessionId: string): void {
    const ws = this.byConn.get(conn);
    if (ws && !ws.getUserData().closed) ws.unsubscribe(topicOf(sessionId));
  }

  closeSession(sessionId: string, code: number, reason: string): void {
    for (const ws of [...this.byConn.values()]) {
      if (ws.getUserData().sessionId === sessionId) ws.end(code, reason);
    }
  }

  /** Closes every socket and waits (at most `waitMs`) for the closing handshakes to finish. */
  async closeAll(code: number, reason: string, waitMs = 2000): Promise<void> {
    for (const ws of [...this.byConn.values()]) ws.end(code, reason);
    const deadline = Date.now() + waitMs;
    while (this.byConn.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }
}

export function registerMiniappSocket(deps: MiniappSocketDeps, sockets: MiniappSockets): void {
  const { app, config, verify, repo, host, metrics, log } = deps;
  const limits = config.limits;
  const upgrades = limits.upgradesPerIpPerSecond > 0 ? new KeyedLimiter(limits.upgradesPerIpPerSecond, limits.upgradesBurst) : null;
  let nextConn = 0;

  /** Answers a refused upgrade as plain HTTP. */
  function refuse(res: HttpResponse, err: unknown): void {
    const reply = errorReply(err, log);
    res.cork(() => {
      res.writeStatus(statusLine(reply.status)).writeHeader('content-type', 'application/json');
      for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
      res.end(JSON.stringify(reply.body), true);
    });
  }

  async function authorize(sessionId: string, token: string | undefined): Promise<SocketData> {
    const claims = await authenticate(verify, metrics, token, ['user']);
    const access = await repo.access(sessionId, claims.sub);
    if (!access.exists) {
      metrics.authFailures.inc({ reason: 'not_found' });
      throw new AppError('session_not_found', `no miniapp session ${sessionId}`);
    }
    if (claims.sid !== undefined ? claims.sid !== sessionId : !access.participant) {
      metrics.authFailures.inc({ reason: 'forbidden' });
      throw new AppError('forbidden', 'this token does not open this session');
    }
    return {
      conn: `c${(nextConn++).toString(36)}`,
      user: claims.sub,
      sessionId,
      expiresAt: claims.exp * 1000,
      ops: new TokenBucket(limits.maxOpsPerSecond, limits.maxOpsPerSecond),
      bad: [],
      closed: false,
    };
  }

  function sendError(ws: WebSocket<SocketData>, code: ErrorCode, message: string, ref?: string): void {
    const d = ws.getUserData();
    if (d.closed) return;
    const frame: ServerFrame = ref === undefined ? { type: 'error', code, message } : { type: 'error', code, message, ref };
    ws.cork(() => ws.send(JSON.stringify(frame)));
  }

  /** Answers a bad frame; a flood of them closes the socket. */
  function badFrame(ws: WebSocket<SocketData>, code: ErrorCode, message: string, ref?: string): void {
    metrics.badFrames.inc({ code });
    const d = ws.getUserData();
    const now = Date.now();
    d.bad.push(now);
    while (d.bad.length && now - d.bad[0] > BAD_FRAME_WINDOW_MS) d.bad.shift();
    if (d.bad.length > BAD_FRAME_LIMIT) {
      log.info({ conn: d.conn, session: d.sessionId }, 'closing a socket that sent too many bad frames');
      ws.end(CloseCodes.policyViolation, 'too many bad frames');
      return;
    }
    sendError(ws, code, message, ref);
  }

  function armExpiry(ws: WebSocket<SocketData>): void {
    const d = ws.getUserData();
    const left = d.expiresAt - Date.now();
    d.expiry = setTimeout(
      () => {
        if (d.closed) return;
        if (Date.now() >= d.expiresAt) ws.end(CloseCodes.policyViolation, 'token expired');
        else armExpiry(ws);
      },
      Math.min(Math.max(0, left), MAX_TIMER_MS),
    );
  }

  /** Hands a message to the session's actor; failures come back to the sender as an error frame. */
  function deliver(ws: WebSocket<SocketData>, event: MiniappEvent, ref?: string): void {
    const d = ws.getUserData();
    host.send(MINIAPP, d.sessionId, event).catch((err) => {
      const code: ErrorCode = isAppError(err) ? err.code : Codes.internal_error;
      if (!isAppError(err)) log.error({ err, conn: d.conn }, 'delivering a frame failed');
      sendError(ws, code, isAppError(err) ? err.message : 'the frame could not be handled', ref);
    });
  }

  const decoder = new TextDecoder('utf-8', { fatal: true });

  app.ws<SocketData>('/v1/miniapp/:sessionId', {
    // uWebSockets.js drops a connection without a close frame past this; up to it we read the
    // frame and close with 1009 ourselves when it is over 16 × MAX_FRAME_BYTES.
    maxPayloadLength: limits.maxFrameBytes * TRANSPORT_FRAME_FACTOR,
    maxBackpressure: config.ws.maxBackpressureBytes,
    closeOnBackpressureLimit: 1,
    idleTimeout: config.ws.idleTimeoutS,
    sendPingsAutomatically: true,

    upgrade(res, req, context: us_socket_context_t) {
      const key = req.getHeader('sec-websocket-key');
      const protocolHeader = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      const sessionId = req.getParameter(0) ?? '';
      const queryToken = req.getQuery('token') ?? '';
      const ip = remoteAddress(res);
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      const wait = upgrades?.take(ip) ?? 0;
      if (wait) {
        metrics.rateLimited.inc({ scope: 'upgrade' });
        refuse(res, new AppError('rate_limited', 'too many upgrades from this address', { retryAfter: wait }));
        return;
      }
      const { token, protocol } = upgradeToken(protocolHeader, queryToken);
      const valid = sessionId.length > 0 && sessionId.length <= 200;
      (valid ? authorize(sessionId, token) : Promise.reject(new AppError('session_not_found', 'no such session'))).then(
        (data) => {
          if (aborted) return;
          res.cork(() => res.upgrade(data, key, protocol, extensions, context));
        },
        (err) => {
          if (!aborted) refuse(res, err);
        },
      );
    },

    open(ws) {
      const d = ws.getUserData();
      sockets.byConn.set(d.conn, ws);
      armExpiry(ws);
      host.send(MINIAPP, d.sessionId, { type: 'join', conn: d.conn, user: d.user }).catch((err) => {
        log.warn({ err, conn: d.conn, session: d.sessionId }, 'session could not be opened');
        if (!d.closed) ws.end(CloseCodes.internalError, 'session unavailable');
      });
    },

    message(ws, message) {
      if (message.byteLength > limits.maxFrameBytes * CLOSE_FRAME_FACTOR) {
        metrics.badFrames.inc({ code: Codes.frame_too_large });
        ws.end(CloseCodes.tooBig, 'frame too large');
        return;
      }
      if (message.byteLength > limits.maxFrameBytes) {
        badFrame(ws, Codes.frame_too_large, `frames are limited to ${limits.maxFrameBytes} bytes`);
        return;
      }
      let frame: unknown;
      try {
        frame = JSON.parse(decoder.decode(message));
      } catch {
        badFrame(ws, Codes.invalid_json, 'the frame is not valid UTF-8 JSON');
        return;
      }
      if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
        badFrame(ws, Codes.invalid_json, 'a frame is one JSON object');
        return;
      }
      const type = (frame as { type?: unknown }).type;
      const d = ws.getUserData();
      if (type === 'op') {
        const opId = (frame as { opId?: unknown }).opId;
        const ref = typeof opId === 'string' && opId.length <= 200 ? opId : undefined;
        const parsed = opFrameSchema.safeParse(frame);
        if (!parsed.success) {
          const { message: text } = describeIssue(parsed.error.issues[0]);
          badFrame(ws, Codes.validation_failed, text, ref);
          return;
        }
        if (!d.ops.take()) {
          metrics.rateLimited.inc({ scope: 'ops' });
          sendError(ws, Codes.rate_limited, `at most ${limits.maxOpsPerSecond} ops per second`, ref);
          return;
        }
        const f = parsed.data;
        deliver(
          ws,
          { type: 'op', conn: d.conn, by: d.user, opId: f.opId, baseVersion: f.baseVersion, op: f.op, receivedAt: performance.now() },
          f.opId,
        );
      } else if (type === 'resume') {
        const parsed = resumeFrameSchema.safeParse(frame);
        if (!parsed.success) {
          badFrame(ws, Codes.validation_failed, describeIssue(parsed.error.issues[0]).message);
          return;
        }
        deliver(ws, { type: 'resume', conn: d.conn, since: parsed.data.since });
      } else {
        badFrame(ws, Codes.unknown_frame_type, `unknown frame type ${JSON.stringify(type)}`);
      }
    },

    close(ws) {
      const d = ws.getUserData();
      d.closed = true;
      clearTimeout(d.expiry);
      sockets.byConn.delete(d.conn);
      // An actor that is gone holds no sockets: only a live one needs to hear of the leave.
      if (host.has(MINIAPP, d.sessionId)) host.send(MINIAPP, d.sessionId, { type: 'leave', conn: d.conn }).catch(() => {});
    },
  });
}
