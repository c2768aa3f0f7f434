/**
 * HTTP on uWebSockets.js: a small router whose handlers are async functions from a copied
 * request to a reply. This file is the HTTP error boundary: every error becomes the JSON
 * error body of PROTOCOL.md, every response carries `x-request-id`, and the request id is the
 * correlation id of every log line written while it is handled.
 */
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { AppError, isAppError } from '../errors.ts';
import { newRequestId, withContext } from '../observability/context.ts';
import { type Logger, maskPhones } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';

export interface Request {
  method: string;
  url: string;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  params: string[];
  query: URLSearchParams;
  reqId: string;
  ip: string;
  /** The body as parsed JSON (only for routes declared with `body: true`). */
  body: unknown;
}

export interface Reply {
  status: number;
  body?: unknown;
  /** Sent as is instead of JSON. */
  raw?: string | Buffer;
  headers?: Record<string, string>;
}

export type Handler = (req: Request) => Promise<Reply> | Reply;

export interface RouteOptions {
  /** Read and parse a JSON body of at most `maxBodyBytes`. */
  body?: boolean;
  /** Name of the route for metrics (defaults to the pattern). */
  name?: string;
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
  503: 'Service Unavailable',
};

export function statusLine(status: number): string {
  return `${status} ${STATUS_TEXT[status] ?? 'Unknown'}`;
}

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

export interface HttpContext {
  app: TemplatedApp;
  log: Logger;
  metrics: Metrics;
  maxBodyBytes: number;
  /** Extra headers on every response. */
  headers?: Record<string, string>;
}

/** The remote address of a request or upgrade, as text. */
export function remoteAddress(res: HttpResponse): string {
  return Buffer.from(res.getRemoteAddressAsText()).toString();
}

/** Reads the body up to `limit` bytes; rejects with payload_too_large beyond it. */
function readBody(res: HttpResponse, limit: number, state: { aborted: boolean }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    res.onData((chunk, isLast) => {
      if (failed) return;
      size += chunk.byteLength;
      if (size > limit) {
        failed = true;
        reject(new AppError('payload_too_large', `the body is larger than ${limit} bytes`));
        return;
      }
      // The chunk is neutered after this callback returns: copy it.
      chunks.push(Buffer.from(new Uint8Array(chunk)));
      if (isLast) resolve(Buffer.concat(chunks, size));
    });
    res.onAborted(() => {
      state.aborted = true;
      reject(new Error('request aborted'));
    });
  });
}

function parseJsonObject(raw: Buffer): unknown {
  const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
  let value: unknown;
  try {
    value = JSON.parse(text.decode(raw));
  } catch {
    throw new AppError('invalid_json', 'the body is not valid UTF-8 JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AppError('invalid_json', 'the body must be a JSON object');
  }
  return value;
}

/** Turns any error into a reply; unexpected ones are logged with the request id. */
export function errorReply(err: unknown, log: Logger): Reply {
  if (isAppError(err)) {
    const headers: Record<string, string> = err.retryAfter ? { 'retry-after': String(err.retryAfter) } : {};
    if (err.status >= 500) log.warn({ code: err.code, err: err.cause ?? err }, err.message);
    return { status: err.status, body: err.toBody(), headers };
  }
  log.error({ err }, 'unexpected error');
  return { status: 500, body: new AppError('internal_error', 'something went wrong on our side').toBody() };
}

/** Writes a reply (corked: it may come from async code). */
export function writeReply(res: HttpResponse, reply: Reply, reqId: string, extra?: Record<string, string>): void {
  const payload = reply.raw ?? (reply.body === undefined ? '' : JSON.stringify(reply.body));
  res.cork(() => {
    res.writeStatus(statusLine(reply.status));
    res.writeHeader('x-request-id', reqId);
    if (reply.raw === undefined && reply.body !== undefined) res.writeHeader('content-type', 'application/json');
    for (const [k, v] of Object.entries(extra ?? {})) res.writeHeader(k, v);
    for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
    // A body we refused to read leaves the connection in an unknown state: close it.
    res.end(payload, reply.status === 413);
  });
}

/** Copies what a handler needs out of the stack-allocated request (valid only synchronously). */
export function copyRequest(req: HttpRequest, res: HttpResponse, paramCount: number): Omit<Request, 'body'> {
  const headers: Record<string, string> = {};
  req.forEach((k, v) => {
    headers[k] = v;
  });
  const given = headers['x-request-id'];
  return {
    method: req.getMethod(),
    url: req.getUrl(),
    headers,
    params: Array.from({ length: paramCount }, (_, i) => req.getParameter(i)),
    query: new URLSearchParams(req.getQuery()),
    reqId: given && REQUEST_ID.test(given) ? given : newRequestId(),
    ip: remoteAddress(res),
  };
}

export function createRouter(ctx: HttpContext) {
  const methods = new Map<string, Set<string>>();

  function handle(pattern: string, method: string, handler: Handler, options: RouteOptions): void {
    const paramCount = (pattern.match(/:/g) ?? []).length;
    const name = options.name ?? pattern;
    let allowed = methods.get(pattern);
    if (!allowed) {
      allowed = new Set();
      methods.set(pattern, allowed);
      // Registered once per pattern; specific methods take precedence over `any`.
      ctx.app.any(pattern, (res, req) => {
        const r = copyRequest(req, res, 0);
        res.onAborted(() => {});
        const reply = errorReply(
          new AppError('method_not_allowed', `${r.method.toUpperCase()} is not allowed here`),
          ctx.log,
        );
        writeReply(res, reply, r.reqId, {
          allow: [...(allowed as Set<string>)].join(', ').toUpperCase(),
          ...ctx.headers,
        });
      });
    }
    allowed.add(method);
    const register = method === 'get' ? ctx.app.get : method === 'post' ? ctx.app.post : ctx.app.del;
    register.call(ctx.app, pattern, (res: HttpResponse, req: HttpRequest) => {
      const r = copyRequest(req, res, paramCount);
      const state = { aborted: false };
      const started = performance.now();
      withContext({ reqId: r.reqId }, () => {
        let body: Promise<unknown> = Promise.resolve(undefined);
        if (options.body) {
          body = readBody(res, ctx.maxBodyBytes, state).then((raw) => {
            const type = r.headers['content-type'] ?? '';
            if (type && !/^application\/(.+\+)?json\b/i.test(type)) {
              throw new AppError('unsupported_media_type', 'send the body as application/json');
            }
            return parseJsonObject(raw);
          });
        } else {
          res.onAborted(() => {
            state.aborted = true;
          });
        }
        body
          .then((parsed) => handler({ ...r, body: parsed }))
          .catch((err) => errorReply(err, ctx.log))
          .then((reply) => {
            ctx.metrics.httpRequests.inc({ route: name, status: String(reply.status) });
            if (state.aborted) return;
            writeReply(res, reply, r.reqId, ctx.headers);
            ctx.log.debug(
              {
                method: r.method,
                url: maskPhones(r.url),
                status: reply.status,
                ms: +(performance.now() - started).toFixed(2),
              },
              'request',
            );
          });
      });
    });
  }

  return {
    get: (pattern: string, handler: Handler, options: RouteOptions = {}) => handle(pattern, 'get', handler, options),
    post: (pattern: string, handler: Handler, options: RouteOptions = {}) =>
      handle(pattern, 'post', handler, { body: true, ...options }),
    /** Answers 404 for everything no route matched. */
    fallback(): void {
      ctx.app.any('/*', (res, req) => {
        const r = copyRequest(req, res, 0);
        res.onAborted(() => {});
        writeReply(res, errorReply(new AppError('not_found', `no route for ${r.url}`), ctx.log), r.reqId, ctx.headers);
      });
    },
  };
}

export type Router = ReturnType<typeof createRouter>;
