/**
 * pino with the correlation id of the current context on every line, tokens and
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

/** Paths that may hold secrets; their values never reach a log. */
const redact = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
  'headers["sec-websocket-protocol"]',
  'password',
  '*.password',
  'secret',
  '*.secret',
  // OAuth tokens never reach a log line by design; these catch a mistake.
  'accessToken',
  '*.accessToken',
  'refreshToken',
  '*.refreshToken',
  'access_token',
  '*.access_token',
  'refresh_token',
  '*.refresh_token',
];

export function createLogger(options: LoggerOptions): Logger {
  const settings: pino.LoggerOptions = {
    level: options.level,
    base: options.base ?? null,
    redact: { paths: redact, censor: '[redacted]' },
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
