/**
 * The one catalog of error codes (README "Errors"). HTTP answers, `error` frames and close
 * reasons all come from here; library errors are translated into these codes where they are
 * caught (`src/store/translatePgError.ts`, `src/auth/verifyToken.ts`), never by matching
 * message strings.
 */

export interface ErrorSpec {
  /** HTTP status when answered over HTTP. */
  status: number;
  /** What the code means, for the README table. */
  description: string;
}

export const errorCatalog = {
  // Requests and frames
  invalid_json: { status: 400, description: 'The body or frame is not a valid UTF-8 JSON object.' },
  validation_failed: { status: 400, description: 'A field is missing or out of range; `path` names it.' },
  unknown_frame_type: { status: 400, description: 'A WebSocket frame has a `type` this endpoint does not take.' },
  frame_too_large: { status: 400, description: 'A WebSocket frame is larger than `MAX_FRAME_BYTES`.' },
  payload_too_large: {
    status: 413,
    description: 'The request body is larger than its route takes (64 KiB on `/v1/miniapps`, else `MAX_BODY_BYTES`).',
  },
  unsupported_media_type: { status: 415, description: 'The request body is not `application/json`.' },
  not_found: { status: 404, description: 'No such route.' },
  method_not_allowed: { status: 405, description: 'The route exists but not for this method.' },
  // Auth
  unauthorized: {
    status: 401,
    description:
      'The token is missing, malformed, badly signed, expired, not yet valid, or for another issuer or audience.',
  },
  forbidden: { status: 403, description: 'The token is valid but its holder may not do this.' },
  rate_limited: { status: 429, description: 'Too many requests, upgrades or ops; `Retry-After` says when to retry.' },
  // Miniapps
  session_not_found: { status: 404, description: 'No miniapp session with that id.' },
  unknown_app: { status: 400, description: 'The `app` is not one this server hosts.' },
  invalid_op: { status: 422, description: 'The op would leave the state invalid for the app, or does not fit it.' },
  invalid_base_version: { status: 400, description: '`baseVersion` is ahead of the session.' },
  base_too_old: {
    status: 409,
    description: 'The ops since `baseVersion` are no longer kept; resync (a snapshot) and re-apply the edit.',
  },
  share_links_unavailable: {
    status: 501,
    description:
      'This server verifies tokens with `JWT_JWKS_URL`, so it cannot mint share links; mint a token with `sid` where tokens are issued.',
  },
  // Relay and conversations
  unknown_event_type: { status: 400, description: 'A relay event has a `type` this server does not take.' },
  batch_too_large: { status: 400, description: 'More than 100 events in one batch; nothing was stored.' },
  relay_backlogged: {
    status: 429,
    description:
      'This server is behind on processing relay events (`RELAY_BACKLOG_MAX` accepted and not yet processed); nothing of the request was stored. `Retry-After` says when to retry.',
  },
  no_valid_events: { status: 400, description: 'No event of the batch is valid; each is listed in `rejected`.' },
  conversation_not_found: { status: 404, description: 'No conversation with that key (or none you may read).' },
  failed_event_not_found: { status: 404, description: 'No failed relay event with that id (unknown, or not failed).' },
  // Integrations (OAuth)
  integrations_disabled: {
    status: 501,
    description:
      'Integrations are off: `DATABASE_URL` is set and `VAULT_KEYS` is not, so there is no key to keep tokens under.',
  },
  unknown_provider: {
    status: 404,
    description: 'No OAuth provider of that name is configured (`OAUTH_<NAME>_CLIENT_ID`).',
  },
  invalid_state: {
    status: 400,
    description:
      "The callback's `state` is unknown, already used, expired (10 minutes) or for another provider; nothing was stored. Connect again.",
  },
  authorization_denied: {
    status: 400,
    description:
      'The provider sent the user back with an error (they declined, say); nothing was stored. Connect again.',
  },
  provider_error: {
    status: 502,
    description:
      'The provider answered with an error, a 5xx, something that is not a token response, or tokens without `expires_in`, or it failed too often lately (its circuit breaker is open); nothing was stored.',
  },
  provider_timeout: {
    status: 504,
    description:
      'The provider did not answer within `OAUTH_TIMEOUT_MS` (each of `OAUTH_ATTEMPTS`); nothing was stored.',
  },
  // Infrastructure
  db_unavailable: { status: 503, description: 'PostgreSQL could not be reached or answered in time; retry.' },
  session_unavailable: {
    status: 503,
    description: 'The session stopped (its writes failed or another node took it over); reconnect and resume.',
  },
  shutting_down: { status: 503, description: 'The server is shutting down.' },
  internal_error: { status: 500, description: 'An unexpected error; the log line with the same request id says more.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof errorCatalog;

/** The codes as constants, so code and tests name them without string literals. */
export const Codes = Object.freeze(
  Object.fromEntries(Object.keys(errorCatalog).map((k) => [k, k])) as { [K in ErrorCode]: K },
);

/** WebSocket close codes (docs/protocol.md), shared with the client SDK and the browser page. */
export { CloseCodes } from '../actors/closeCodes.ts';

/** An error with a catalog code; `path` names the offending field for validation errors. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly path?: (string | number)[];
  /** Seconds, for `Retry-After`. */
  readonly retryAfter?: number;

  constructor(
    code: ErrorCode,
    message: string,
    options: { path?: (string | number)[]; retryAfter?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = errorCatalog[code].status;
    this.path = options.path;
    this.retryAfter = options.retryAfter;
  }

  /** The JSON error body of docs/protocol.md. */
  toBody(): { error: { code: string; message: string; path?: (string | number)[] } } {
    return { error: { code: this.code, message: this.message, ...(this.path ? { path: this.path } : {}) } };
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}
