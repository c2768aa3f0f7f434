/**
 * pino with the correlation id of the current context (`context.ts`) on its lines, tokens and
 * credentials redacted, and pino-pretty when a person is reading; JSON lines go to stdout
 * asynchronously (flushed at exit).
 */
import pino, { type Logger } from 'pino';
import { currentContext } from './context.ts';

export type { Logger };

export interface LoggerOptions {
  level: string;
  format: 'pretty' | 'json';
  /** Fields added to every line (e.g. the node id). */
  base?: Record<string, unknown>;
  destination?: pino.DestinationStream;
}

/** The most log output held in memory while stdout is not read (16 MiB). */
const LOG_BUFFER_BYTES = 16 * 1024 * 1024;

/**
 * Keys whose values never reach a log, wherever they are in a line down to `SECRET_DEPTH`
 * levels (`token`, `err.token`, `headers.authorization`, `req.headers.authorization`).
 * OAuth tokens never reach a log line by design; their names catch a mistake.
 */
const SECRET_KEYS = new Set([
  'token',
  'authorization',
  'sec-websocket-protocol',
  'password',
  'secret',
  'accessToken',
  'refreshToken',
  'access_token',
  'refresh_token',
]);
const SECRET_DEPTH = 3;
const CENSOR = '[redacted]';

/**
 * `value` with the value of every secret key replaced by the censor, down to `depth` levels:
 * `value` itself when it holds none (a line without secrets costs a look at its keys and
 * allocates nothing), else a copy of each object on the way to one (an Error stays an Error,
 * with its message and stack); what the caller passed is never changed.
 *
 * pino's own `redact` (`@pinojs/redact`) parsed every path again, character by character, for
 * every key of every line: 10 % of the bytes the server allocated under relay load.
 */
export function censorSecrets(value: unknown, depth = SECRET_DEPTH): unknown {
  // A buffer's keys are its bytes: nothing to look for there.
  if (depth === 0 || value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const next = censorSecrets(value[i], depth - 1);
      if (next === value[i]) continue;
      copy ??= [...value];
      copy[i] = next;
    }
    return copy ?? value;
  }
  let copy: Record<string, unknown> | undefined;
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key];
    const next = SECRET_KEYS.has(key) ? CENSOR : censorSecrets(v, depth - 1);
    if (next === v) continue;
    copy ??= Object.create(Object.getPrototypeOf(value), Object.getOwnPropertyDescriptors(value)) as Record<
      string,
      unknown
    >;
    Object.defineProperty(copy, key, { value: next, enumerable: true, writable: true, configurable: true });
  }
  return copy ?? value;
}

export function createLogger(options: LoggerOptions): Logger {
  const settings: pino.LoggerOptions = {
    level: options.level,
    base: options.base ?? null,
    // Secrets are censored here rather than by pino's `redact` (see `censorSecrets`).
    formatters: { log: (line) => censorSecrets(line) as Record<string, unknown> },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin() {
      const ctx = currentContext();
      return ctx ? { reqId: ctx.reqId } : {};
    },
  };
  if (options.destination) return pino(settings, options.destination);
  if (options.format === 'pretty') {
    return pino({
      ...settings,
      transport: {
        target: 'pino-pretty',
        options: { colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' },
      },
    });
  }
  // Lines written asynchronously: while one write is in flight the next lines gather and go
  // in one write (a line per request was one synchronous write each, ~5 % of the relay's CPU
  // at load). pino flushes what is left synchronously when the process exits. A reader that
  // stops reading costs at most LOG_BUFFER_BYTES of memory; lines past it are dropped.
  return pino(settings, pino.destination({ dest: 1, sync: false, maxLength: LOG_BUFFER_BYTES }));
}

/** Masks all but the last four digits of a phone number or user id for logs. */
export function maskId(id: string): string {
  return id.length <= 4 ? '****' : `${'*'.repeat(Math.min(id.length - 4, 8))}${id.slice(-4)}`;
}

/** Phone numbers (e.g. in a conversation key) masked for logs: `+1555…0001` → `+*******0001`. */
export function maskPhones(text: string): string {
  return text.replace(
    /(\+|%2B)(\d{3,11})(\d{4})/gi,
    (_, plus: string, hidden: string, last: string) => `${plus}${'*'.repeat(hidden.length)}${last}`,
  );
}
