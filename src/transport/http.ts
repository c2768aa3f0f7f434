/**
 * HTTP on uWebSockets.js: a small router whose handlers are async functions from a copied
 * request to a reply. This file is the HTTP error boundary: every error becomes the JSON
 * error body of docs/protocol.md, every response carries `x-request-id`, and the request id is the
 * correlation id (`reqId`) of the request's line, of its error's line, and of every line written
 * synchronously while it is handled (`context.ts`).
 *
 * It is also the edge a hostile client meets first: each client address has a request rate
 * and a number of bodies in flight; a route's `guard` authenticates and authorizes from the
 * request line and headers alone, and only then is the body received (at most the route's
 * limit, refused from `Content-Length` before reading).
 */
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { AppError, isAppError } from '../errors.ts';
import { clientKey, clientKeyOfBytes } from '../limits/clientKey.ts';
import { InFlightLimiter } from '../limits/InFlightLimiter.ts';
import { KeyedLimiter } from '../limits/tokenBucket.ts';
import { type TrustedProxies, trustedProxiesOf } from '../limits/trustedProxies.ts';
import { newRequestId, withContext } from '../observability/context.ts';
import { type Logger, maskPhones } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { BodyReader, RequestAborted } from './BodyReader.ts';

/** What is known of a request before its body: the request line and headers. */
export interface RequestHead {
  method: string;
  url: string;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  params: string[];
  query: URLSearchParams;
  reqId: string;
  /**
   * What the request is limited by: its IPv4 address or its IPv6 /64 (`clientKey`). Empty while
   * no per-address limit is on: asking the socket for its peer is a system call a request.
   */
  client: string;
}

export interface Request<A = undefined> extends RequestHead {
  /** The body as parsed JSON (only for routes declared with `body: true`). */
  body: unknown;
  /** What the route's guard returned (e.g. the verified claims). */
  auth: A;
}

export interface Reply {
  status: number;
  body?: unknown;
  /** Sent as is instead of JSON. */
  raw?: string | Buffer;
  headers?: Record<string, string>;
}

export type Handler<A = undefined> = (req: Request<A>) => Promise<Reply> | Reply;

/**
 * Authenticates and authorizes a request from its line and headers, before any of its body is
 * received; throws a catalog error to refuse it. Its result is the handler's `req.auth`.
 */
export type Guard<A> = (req: RequestHead) => Promise<A> | A;

export interface RouteOptions<A = undefined> {
  /** Read and parse a JSON body (at most `maxBodyBytes`). */
  body?: boolean;
  /** Largest body of this route in bytes; never above the router's `maxBodyBytes`. */
  maxBodyBytes?: number;
  guard?: Guard<A>;
  /** Name of the route for metrics (defaults to the pattern). */
  name?: string;
  /**
   * Requests logged at debug, not info: probes (`/health`, `/ready`, `/metrics`) always, or those
   * answered with a status the function picks (relay pushes stored, thousands a second).
   */
  quiet?: boolean | ((status: number) => boolean);
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  204: 'No Content',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

export function statusLine(status: number): string {
  return `${status} ${STATUS_TEXT[status] ?? 'Unknown'}`;
}

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** The request's correlation id: its `x-request-id` when that is 1–200 printable ASCII characters, else a new one. */
export function requestIdOf(given: string | undefined): string {
  return given && REQUEST_ID.test(given) ? given : newRequestId();
}

export interface HttpContext {
  app: TemplatedApp;
  log: Logger;
  metrics: Metrics;
  /** `MAX_BODY_BYTES`: the largest body of any route. */
  maxBodyBytes: number;
  /** Per client address; 0 turns a limit off (absent: all off). */
  limits?: { httpRequestsPerIpPerSecond: number; httpRequestsBurst: number; bodiesInFlightPerIp: number };
  /** Extra headers on every response. */
  headers?: Record<string, string>;
  /** TRUSTED_PROXIES: whose `X-Forwarded-For` names the client (absent: nobody's). */
  trustedProxies?: readonly string[];
}

/**
 * What a request or upgrade is limited by: its client's IPv4 address or IPv6 /64. The client is
 * the connection's peer, or, when that is one of `trusted` (TRUSTED_PROXIES), the address its
 * `X-Forwarded-For` names.
 */
export function clientOf(res: HttpResponse, forwardedFor: string | undefined, trusted: TrustedProxies | null): string {
  // Every request asks: without proxies to believe, from the address's bytes (no text to parse).
  if (!trusted) return clientKeyOfBytes(res.getRemoteAddress());
  const peer = Buffer.from(res.getRemoteAddressAsText()).toString();
  return clientKey(trusted.clientAddress(peer, forwardedFor));
}

/** Strict UTF-8 (a malformed byte is an error); without `stream` a decode keeps no state, so one serves every body. */
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function parseJsonObject(raw: Buffer): unknown {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(raw));
  } catch {
    throw new AppError('invalid_json', 'the body is not valid UTF-8 JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AppError('invalid_json', 'the body must be a JSON object');
  }
  return value;
}

/** Turns any error into a reply; unexpected ones are logged with the request id (`reqId`, the answer's `x-request-id`). */
export function errorReply(err: unknown, log: Logger, reqId: string): Reply {
  if (isAppError(err)) {
    const headers: Record<string, string> = err.retryAfter ? { 'retry-after': String(err.retryAfter) } : {};
    if (err.status >= 500) log.warn({ reqId, code: err.code, err: err.cause ?? err }, err.message);
    return { status: err.status, body: err.toBody(), headers };
  }
  log.error({ reqId, err }, 'unexpected error');
  return { status: 500, body: new AppError('internal_error', 'something went wrong on our side').toBody() };
}

/**
 * Writes a reply (corked: it may come from async code). `closeConnection` when the request's
 * body was not read to its end: the connection is then in an unknown state.
 */
export function writeReply(
  res: HttpResponse,
  reply: Reply,
  reqId: string,
  extra?: Record<string, string>,
  closeConnection = false,
): void {
  const payload = reply.raw ?? (reply.body === undefined ? '' : JSON.stringify(reply.body));
  res.cork(() => {
    res.writeStatus(statusLine(reply.status));
    res.writeHeader('x-request-id', reqId);
    if (reply.raw === undefined && reply.body !== undefined) res.writeHeader('content-type', 'application/json');
    for (const k in extra) res.writeHeader(k, extra[k]);
    for (const k in reply.headers) res.writeHeader(k, reply.headers[k]);
    res.end(payload, closeConnection);
  });
}

/** Copies what a handler needs out of the stack-allocated request (valid only synchronously). */
export function copyRequest(
  req: HttpRequest,
  res: HttpResponse,
  paramCount: number,
  trusted: TrustedProxies | null,
  keyed = true,
): RequestHead {
  const headers: Record<string, string> = {};
  req.forEach((k, v) => {
    headers[k] = v;
  });
  return {
    method: req.getMethod(),
    url: req.getUrl(),
    headers,
    params: Array.from({ length: paramCount }, (_, i) => req.getParameter(i)),
    query: new URLSearchParams(req.getQuery()),
    reqId: requestIdOf(headers['x-request-id']),
    client: keyed ? clientOf(res, headers['x-forwarded-for'], trusted) : '',
  };
}

/** True when the request announces a body: answering it unread must close the connection. */
function announcesBody(headers: Record<string, string>): boolean {
  const length = headers['content-length'];
  return (length !== undefined && length !== '0') || headers['transfer-encoding'] !== undefined;
}

export function createRouter(ctx: HttpContext) {
  const methods = new Map<string, Set<string>>();
  const limits = ctx.limits;
  const requests =
    limits && limits.httpRequestsPerIpPerSecond > 0
      ? new KeyedLimiter(limits.httpRequestsPerIpPerSecond, limits.httpRequestsBurst)
      : null;
  const bodies = new InFlightLimiter(limits?.bodiesInFlightPerIp ?? 0);
  const trusted = trustedProxiesOf(ctx.trustedProxies ?? []);
  /** A per-address limit is on: requests need their client's key. */
  const keyed = requests !== null || (limits?.bodiesInFlightPerIp ?? 0) > 0;

  /** Spends one request of the address's rate; the error to answer when it is spent. */
  function overRate(client: string): AppError | undefined {
    const wait = requests?.take(client) ?? 0;
    if (!wait) return undefined;
    ctx.metrics.rateLimited.inc({ scope: 'http' });
    return new AppError('rate_limited', 'too many requests from this address', { retryAfter: wait });
  }

  /** Answers an error from inside the route handler, before anything asynchronous. */
  function answerNow(res: HttpResponse, r: RequestHead, err: AppError, extra: Record<string, string> = {}): void {
    res.onAborted(() => {});
    const reply = errorReply(err, ctx.log, r.reqId);
    writeReply(res, reply, r.reqId, { ...extra, ...ctx.headers }, announcesBody(r.headers));
    // A flood refused by its rate limit is counted in metrics, not logged line by line.
    logRequest(r, reply.status, performance.now(), reply.status === 429);
  }

  /**
   * One line per request: at info, except those `quiet` picks and refused floods (debug). Never
   * a token or a phone number. It names the request's x-request-id (`reqId`).
   */
  function logRequest(r: RequestHead, status: number, started: number, quiet: RouteOptions<unknown>['quiet']): void {
    const level = quiet === true || (typeof quiet === 'function' && quiet(status)) ? 'debug' : 'info';
    if (!ctx.log.isLevelEnabled(level)) return;
    const line = {
      reqId: r.reqId,
      method: r.method.toUpperCase(),
      url: maskPhones(r.url),
      status,
      ms: +(performance.now() - started).toFixed(2),
    };
    ctx.log[level](line, 'request');
  }

  /**
   * Receives and parses a body the guard allowed: refused from `Content-Length` and
   * `Content-Type` before reading, and while one more body from this address is beyond its limit.
   */
  async function receive(r: RequestHead, body: BodyReader, limit: number): Promise<unknown> {
    if (Number(r.headers['content-length'] ?? 0) > limit) {
      throw new AppError('payload_too_large', `the body is larger than ${limit} bytes`);
    }
    const type = r.headers['content-type'] ?? '';
    if (type && !/^application\/(.+\+)?json\b/i.test(type)) {
      throw new AppError('unsupported_media_type', 'send the body as application/json');
    }
    const release = bodies.acquire(r.client);
    if (!release) {
      ctx.metrics.rateLimited.inc({ scope: 'body' });
      throw new AppError('rate_limited', 'too many request bodies in flight from this address', { retryAfter: 1 });
    }
    try {
      return parseJsonObject(await body.read());
    } finally {
      release();
    }
  }

  function handle<A>(pattern: string, method: string, handler: Handler<A>, options: RouteOptions<A>): void {
    const paramCount = (pattern.match(/:/g) ?? []).length;
    const name = options.name ?? pattern;
    const limit = Math.min(options.maxBodyBytes ?? ctx.maxBodyBytes, ctx.maxBodyBytes);
    let allowed = methods.get(pattern);
    if (!allowed) {
      const methodsOfPattern = new Set<string>();
      allowed = methodsOfPattern;
      methods.set(pattern, methodsOfPattern);
      // Registered once per pattern; specific methods take precedence over `any`.
      ctx.app.any(pattern, (res, req) => {
        const r = copyRequest(req, res, 0, trusted, keyed);
        const refusal =
          overRate(r.client) ?? new AppError('method_not_allowed', `${r.method.toUpperCase()} is not allowed here`);
        answerNow(res, r, refusal, { allow: [...methodsOfPattern].join(', ').toUpperCase() });
      });
    }
    allowed.add(method === 'del' ? 'delete' : method);

    async function respond(r: RequestHead, body: BodyReader | undefined): Promise<Reply> {
      const auth = (options.guard ? await options.guard(r) : undefined) as A;
      const parsed = body ? await receive(r, body, limit) : undefined;
      return handler({ ...r, body: parsed, auth });
    }

    const register = method === 'get' ? ctx.app.get : method === 'post' ? ctx.app.post : ctx.app.del;
    register.call(ctx.app, pattern, (res: HttpResponse, req: HttpRequest) => {
      const r = copyRequest(req, res, paramCount, trusted, keyed);
      const limited = overRate(r.client);
      if (limited) return answerNow(res, r, limited);
      const started = performance.now();
      let aborted = false;
      // Attached before returning: uWebSockets.js drops body bytes that find no data handler.
      const body = options.body ? new BodyReader(res, limit, r.headers['content-length']) : undefined;
      res.onAborted(() => {
        aborted = true;
        body?.abort();
      });
      withContext({ reqId: r.reqId }, () => {
        respond(r, body)
          .catch((err) => (err instanceof RequestAborted ? undefined : errorReply(err, ctx.log, r.reqId)))
          .then((reply) => {
            if (!reply || aborted) return;
            ctx.metrics.httpRequests.inc({ route: name, status: String(reply.status) });
            const unread = body ? !body.complete : announcesBody(r.headers);
            body?.resume();
            writeReply(res, reply, r.reqId, ctx.headers, unread);
            logRequest(r, reply.status, started, options.quiet);
          });
      });
    });
  }

  // An inline guard needs its parameter typed (`(req: RequestHead) => …`): `A` is inferred from it.
  return {
    get: <A = undefined>(pattern: string, handler: Handler<NoInfer<A>>, options: RouteOptions<A> = {}) =>
      handle(pattern, 'get', handler, options),
    post: <A = undefined>(pattern: string, handler: Handler<NoInfer<A>>, options: RouteOptions<A> = {}) =>
      handle(pattern, 'post', handler, { body: true, ...options }),
    del: <A = undefined>(pattern: string, handler: Handler<NoInfer<A>>, options: RouteOptions<A> = {}) =>
      handle(pattern, 'del', handler, options),
    /** Answers 404 for everything no route matched. */
    fallback(): void {
      ctx.app.any('/*', (res, req) => {
        const r = copyRequest(req, res, 0, trusted, keyed);
        answerNow(res, r, overRate(r.client) ?? new AppError('not_found', `no route for ${r.url}`));
      });
    },
  };
}

export type Router = ReturnType<typeof createRouter>;
