/**
 * What every WebSocket endpoint shares (docs/protocol.md "WebSocket"): authentication in the
 * upgrade handler (no socket exists before it passes; refusals are plain HTTP), the upgrade
 * rate limit per address, the caps on open sockets (per user, per session: 429 on upgrade),
 * frame size limits, JSON parsing, the bad-frame flood limit, and closing with 1008 when the
 * token expires. This is the sockets' error boundary: endpoints get parsed JSON objects and
 * answer with frames; a frame whose handler throws is a bad frame.
 */

import type { HttpResponse, TemplatedApp, us_socket_context_t, WebSocket } from 'uWebSockets.js';
import { processId } from '../cluster/processId.ts';
import type { Config } from '../config.ts';
import { AppError, CloseCodes, Codes, type ErrorCode, isAppError } from '../errors.ts';
import { createLocalSocketCaps, type SocketCaps } from '../limits/socketCaps.ts';
import { KeyedLimiter } from '../limits/tokenBucket.ts';
import { trustedProxiesOf } from '../limits/trustedProxies.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { upgradeToken } from './authenticate.ts';
import { clientOf, errorReply, requestIdOf, statusLine } from './http.ts';

/** What every socket carries; endpoints extend it. */
export interface BaseSocketData {
  conn: string;
  user: string;
  /** Token expiry, ms since the epoch. */
  expiresAt: number;
  /** Times (ms) of recent bad frames, for the flood limit. */
  bad: number[];
  expiry?: NodeJS.Timeout;
  closed: boolean;
  /** The socket caps (their keys) this socket counts against while open. */
  counted?: string[];
}

/** A limit on open sockets sharing `key` (a user id, a session id) on one endpoint. */
export interface SocketCap {
  /** `archety_rate_limited_total` scope when the cap refuses an upgrade. */
  scope: string;
  key: string;
  /** Most open sockets with this key; 0: no limit. */
  max: number;
  /** The refusal's message. */
  message: string;
}

export interface UpgradeRequest {
  /** Route parameters (e.g. the session id). */
  params: string[];
  token: string | undefined;
  /** A new connection id (process-unique). */
  conn: string;
}

export interface EndpointHandlers<D extends BaseSocketData> {
  /** Authenticates and authorizes the upgrade; throws a catalog error to refuse it. */
  authorize(req: UpgradeRequest): Promise<D>;
  /**
   * `authorize`'s answer where it is known without waiting (a token that checks out at once, a
   * live session); undefined whenever only `authorize` can tell, refusals included. Such an
   * upgrade completes inside uWebSockets.js' own callback (see `upgradeLater` for why that
   * matters).
   */
  authorizeNow?(req: UpgradeRequest): D | undefined;
  /** The caps an authorized socket counts against; an upgrade past any of them is refused with 429. */
  caps?(data: D): SocketCap[];
  open(ws: WebSocket<D>): void;
  /** A parsed frame (a JSON object); a throw counts as a bad frame. */
  frame(ws: WebSocket<D>, frame: Record<string, unknown>): void;
  /** The socket closed: `code` is what the client sent, or 1006 when the connection just ended. */
  close(ws: WebSocket<D>, code: number): void;
  /** The socket wrote out its buffered frames (below backpressure again). */
  drain?(ws: WebSocket<D>): void;
}

export interface Endpoint<D extends BaseSocketData> {
  send(ws: WebSocket<D>, frame: unknown): void;
  /**
   * Sends `frame` after the current turn of the event loop, with every other frame queued for
   * this socket meanwhile, in one cork: one write for a group commit's worth of replies rather
   * than one each. In order with the socket's other `sendSoon` frames (not with `send`).
   */
  sendSoon(ws: WebSocket<D>, frame: unknown): void;
  sendError(ws: WebSocket<D>, code: ErrorCode, message: string, ref?: string): void;
  /** Answers a bad frame with an error; a flood of them closes the socket with 1008. */
  badFrame(ws: WebSocket<D>, code: ErrorCode, message: string, ref?: string): void;
  /** Open sockets. */
  count(): number;
  /** Closes every socket and waits (at most `waitMs`) for the closing handshakes to finish. */
  closeAll(code: number, reason: string, waitMs?: number): Promise<void>;
}

const BAD_FRAME_LIMIT = 100;
const BAD_FRAME_WINDOW_MS = 60_000;
/** Frames over MAX_FRAME_BYTES × this close the socket with 1009 (docs/protocol.md). */
const CLOSE_FRAME_FACTOR = 16;
/** uWebSockets.js' own limit, as a multiple of MAX_FRAME_BYTES: past it, it drops the connection without a close frame. */
const TRANSPORT_FRAME_FACTOR = 32;
/** `Retry-After` (s) of an upgrade refused by a socket cap: sockets close at the client's pace, not on a timer. */
const CAP_RETRY_AFTER_S = 5;
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

let nextConn = 0;

/**
 * Completes an upgrade that waited for asynchronous work (the token's verification, the socket
 * caps), around two faults of uWebSockets.js 20.30, the version published on npm:
 * - `res.cork(() => res.upgrade(…))` after an await can close the new socket a few
 *   milliseconds after its `open`, without an error or a close frame (uWebSockets pull request
 *   1929: after the upgrade reuses the response's memory in place, `cork` reads the socket as a
 *   finished HTTP response on `Connection: close` and closes it, depending on what the heap
 *   left there; seen on a process's first upgrades, and on some later ones with no other socket
 *   open). So the response is not corked, as uWebSockets' author advises (uWebSockets issue
 *   1583): uWebSockets.js prints its "must be corked" warning on stderr for each such upgrade,
 *   and writes the response in pieces (24 `sendto` calls where a corked upgrade makes one,
 *   under strace), which makes such an upgrade cost three to four times the CPU of one
 *   completed inside uWebSockets.js' own callback (`authorizeNow` avoids the wait where it
 *   can). Corking another open socket instead does not cork this response: uWebSockets.js
 *   corks one socket at a time.
 * - an upgrade made while uWebSockets.js parses another connection's request (a promise
 *   continuation can run at the end of any of its callbacks) is taken for that connection's:
 *   the upgrade runs in a task of its own (`setImmediate`), outside every callback.
 */
function upgradeLater(upgrade: () => void): Promise<void> {
  return new Promise((resolve, reject) =>
    setImmediate(() => {
      // A throw here would be nobody's to catch: it fails the upgrade instead.
      try {
        upgrade();
        resolve();
      } catch (err) {
        reject(err);
      }
    }),
  );
}

export interface EndpointContext {
  app: TemplatedApp;
  config: Config;
  metrics: Metrics;
  log: Logger;
  /** Where this endpoint's socket caps are counted: this process (the default) or the cluster. */
  caps?: SocketCaps;
}

export function createSocketEndpoint<D extends BaseSocketData>(
  ctx: EndpointContext,
  pattern: string,
  handlers: EndpointHandlers<D>,
): Endpoint<D> {
  const { app, config, metrics, log } = ctx;
  const limits = config.limits;
  const upgrades =
    limits.upgradesPerIpPerSecond > 0 ? new KeyedLimiter(limits.upgradesPerIpPerSecond, limits.upgradesBurst) : null;
  const paramCount = (pattern.match(/:/g) ?? []).length;
  const trustedProxies = trustedProxiesOf(config.trustedProxies);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const open = new Set<WebSocket<D>>();
  const caps = ctx.caps ?? createLocalSocketCaps();

  /** Counts `data` against its caps (those with a limit), or returns the refusal when one is full. */
  async function admit(data: D): Promise<AppError | null> {
    const limited = limitsOf(data);
    return admitted(data, limited, await caps.admit(limited));
  }

  /** The caps `data` counts against that have a limit. */
  function limitsOf(data: D): SocketCap[] {
    return (handlers.caps?.(data) ?? []).filter((cap) => cap.max > 0);
  }

  function admitted(data: D, limited: SocketCap[], full: SocketCap | null): AppError | null {
    if (full) {
      metrics.rateLimited.inc({ scope: full.scope });
      return new AppError('rate_limited', full.message, { retryAfter: CAP_RETRY_AFTER_S });
    }
    data.counted = limited.map((cap) => cap.key);
    return null;
  }

  function release(data: D): void {
    if (data.counted) caps.release(data.counted);
    data.counted = undefined;
  }

  /** Authorizes, admits and upgrades, unless the client went away meanwhile (then nothing stays counted). */
  async function settleUpgrade(
    res: HttpResponse,
    req: UpgradeRequest,
    reqId: string,
    isAborted: () => boolean,
    upgrade: (data: D) => void,
  ): Promise<void> {
    const data = await handlers.authorize(req);
    if (isAborted()) return;
    // Counted before the upgrade: uWebSockets.js opens the socket within `upgrade`, so
    // concurrent upgrades cannot all slip under a cap.
    const full = await admit(data);
    if (isAborted()) release(data);
    else if (full) refuse(res, full, reqId);
    else
      await upgradeLater(() => {
        // The client may have gone in the meantime.
        if (isAborted()) release(data);
        else upgrade(data);
      });
  }

  /** Answers an upgrade with the error's status and JSON body, and its correlation id. */
  function refuse(res: HttpResponse, err: unknown, reqId: string): void {
    const reply = errorReply(err, log, reqId);
    res.cork(() => {
      res
        .writeStatus(statusLine(reply.status))
        .writeHeader('x-request-id', reqId)
        .writeHeader('content-type', 'application/json');
      for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
      res.end(JSON.stringify(reply.body), true);
    });
  }

  /** Frames queued by `sendSoon`, per socket, until the turn ends. */
  const soon = new Map<WebSocket<D>, string[]>();
  const flushSoon = () => {
    for (const [ws, texts] of soon) {
      if (ws.getUserData().closed) continue;
      ws.cork(() => {
        for (const text of texts) ws.send(text);
      });
    }
    soon.clear();
  };

  const endpoint: Endpoint<D> = {
    send(ws, frame) {
      if (ws.getUserData().closed) return;
      const text = JSON.stringify(frame);
      ws.cork(() => ws.send(text));
    },
    sendSoon(ws, frame) {
      if (ws.getUserData().closed) return;
      if (soon.size === 0) setImmediate(flushSoon);
      const text = JSON.stringify(frame);
      const texts = soon.get(ws);
      if (texts) texts.push(text);
      else soon.set(ws, [text]);
    },
    sendError(ws, code, message, ref) {
      endpoint.send(ws, ref === undefined ? { type: 'error', code, message } : { type: 'error', code, message, ref });
    },
    badFrame(ws, code, message, ref) {
      metrics.badFrames.inc({ code });
      const d = ws.getUserData();
      const now = Date.now();
      d.bad.push(now);
      while (d.bad.length && now - d.bad[0] > BAD_FRAME_WINDOW_MS) d.bad.shift();
      if (d.bad.length > BAD_FRAME_LIMIT) {
        log.info({ conn: d.conn }, 'closing a socket that sent too many bad frames');
        ws.end(CloseCodes.policyViolation, 'too many bad frames');
        return;
      }
      endpoint.sendError(ws, code, message, ref);
    },
    count: () => open.size,
    async closeAll(code, reason, waitMs = 2000) {
      for (const ws of [...open]) ws.end(code, reason);
      const deadline = Date.now() + waitMs;
      while (open.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    },
  };

  function armExpiry(ws: WebSocket<D>): void {
    const d = ws.getUserData();
    d.expiry = setTimeout(
      () => {
        if (d.closed) return;
        if (Date.now() >= d.expiresAt) ws.end(CloseCodes.policyViolation, 'token expired');
        else armExpiry(ws);
      },
      Math.min(Math.max(0, d.expiresAt - Date.now()), MAX_TIMER_MS),
    );
  }

  app.ws<D>(pattern, {
    maxPayloadLength: limits.maxFrameBytes * TRANSPORT_FRAME_FACTOR,
    maxBackpressure: config.ws.maxBackpressureBytes,
    // A slow consumer is dropped rather than silently skipped: it resumes when it reconnects.
    closeOnBackpressureLimit: 1,
    idleTimeout: config.ws.idleTimeoutS,
    sendPingsAutomatically: true,

    // Only where the endpoint wants it: uWS calls into JavaScript on every drain of every
    // socket that has a handler, which under fan-out is often (the miniapp sockets need none).
    ...(handlers.drain ? { drain: handlers.drain } : {}),

    upgrade(res, req, context: us_socket_context_t) {
      const key = req.getHeader('sec-websocket-key');
      const protocolHeader = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      const params = Array.from({ length: paramCount }, (_, i) => req.getParameter(i) ?? '');
      const queryToken = req.getQuery('token') ?? '';
      const reqId = requestIdOf(req.getHeader('x-request-id') || undefined);
      // What the upgrade is limited by (its IPv4 address or IPv6 /64), when a limit is set.
      const wait = upgrades?.take(clientOf(res, req.getHeader('x-forwarded-for') || undefined, trustedProxies)) ?? 0;
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      if (wait) {
        metrics.rateLimited.inc({ scope: 'upgrade' });
        refuse(res, new AppError('rate_limited', 'too many upgrades from this address', { retryAfter: wait }), reqId);
        return;
      }
      const { token, protocol } = upgradeToken(protocolHeader, queryToken);
      // Unique across processes and restarts (stored ops remember their socket); names its process.
      const conn = `${processId}.${(nextConn++).toString(36)}`;
      const request = { params, token, conn };
      // Decided at once: upgraded here, inside uWebSockets.js' callback, where uWebSockets.js
      // corks the response itself. An upgrade completed later goes out uncorked, in 24 socket
      // writes: three to four times the CPU (`upgradeLater`).
      // Only where the caps can count at once too (single-node mode: `admitNow`).
      const admitNow = caps.admitNow;
      const now = admitNow ? handlers.authorizeNow?.(request) : undefined;
      if (now && admitNow) {
        const limited = limitsOf(now);
        const full = admitted(now, limited, admitNow(limited));
        if (full) refuse(res, full, reqId);
        else res.upgrade(now, key, protocol, extensions, context);
        return;
      }
      settleUpgrade(
        res,
        request,
        reqId,
        () => aborted,
        (data) => {
          // Never `res.cork` here (see `upgradeLater`).
          res.upgrade(data, key, protocol, extensions, context);
          if (data.closed)
            log.warn({ conn }, 'a socket closed as it opened (a fault of uWebSockets.js); its client reconnects');
        },
      ).catch((err) => {
        if (!aborted) refuse(res, err, reqId);
      });
    },

    open(ws) {
      open.add(ws);
      armExpiry(ws);
      handlers.open(ws);
    },

    message(ws, message) {
      if (message.byteLength > limits.maxFrameBytes * CLOSE_FRAME_FACTOR) {
        metrics.badFrames.inc({ code: Codes.frame_too_large });
        ws.end(CloseCodes.tooBig, 'frame too large');
        return;
      }
      if (message.byteLength > limits.maxFrameBytes) {
        endpoint.badFrame(ws, Codes.frame_too_large, `frames are limited to ${limits.maxFrameBytes} bytes`);
        return;
      }
      let frame: unknown;
      try {
        frame = JSON.parse(decoder.decode(message));
      } catch {
        endpoint.badFrame(ws, Codes.invalid_json, 'the frame is not valid UTF-8 JSON');
        return;
      }
      if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
        endpoint.badFrame(ws, Codes.invalid_json, 'a frame is one JSON object');
        return;
      }
      try {
        handlers.frame(ws, frame as Record<string, unknown>);
      } catch (err) {
        // A client's frame made the handler fail: a bad frame (counted towards the flood
        // limit), logged at warn so a client cannot fill the error log.
        log.warn({ err, conn: ws.getUserData().conn }, 'a frame handler failed');
        endpoint.badFrame(ws, isAppError(err) ? err.code : Codes.internal_error, 'the frame could not be handled');
      }
    },

    close(ws, code) {
      const d = ws.getUserData();
      d.closed = true;
      open.delete(ws);
      release(d);
      clearTimeout(d.expiry);
      handlers.close(ws, code);
    },
  });
  return endpoint;
}
