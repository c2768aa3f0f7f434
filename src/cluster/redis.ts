/**
 * The Redis connection of a cluster-mode process (leases, budgets), set up for a server that
 * must keep serving what it can while Redis is away:
 * - it reconnects forever, backing off up to `MAX_RECONNECT_DELAY_MS`, and says so in the log
 *   (once when the connection is lost, every tenth attempt after that, and once when it is back);
 * - a command issued while Redis is away fails at the second failed reconnection attempt (a
 *   few seconds at most) rather than waiting for Redis, so its caller (a lease's deadline, a
 *   budget's fallback) decides soon, and ioredis' offline queue holds only the last seconds'
 *   commands, never an outage's worth;
 * - a command in flight when the connection broke fails too instead of being replayed after
 *   the reconnection, when its caller has long given up on it;
 * - a connection that stops answering (no byte back within `SOCKET_TIMEOUT_MS` of a command) is
 *   dropped and reconnected, so a half-open TCP connection does not hang every command.
 * The pub/sub bus keeps its own connections (`redisBus.ts`).
 */
import { createHash } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../observability/logger.ts';

/** Longest wait (ms) for a TCP connection and Redis' first answer. */
export const CONNECT_TIMEOUT_MS = 2000;
/** Longest pause (ms) between two reconnection attempts. */
export const MAX_RECONNECT_DELAY_MS = 2000;
/** A connection with a command pending and nothing received for this long (ms) is dropped. */
export const SOCKET_TIMEOUT_MS = 5000;

/** 100 ms doubling up to `MAX_RECONNECT_DELAY_MS`, plus up to 100 ms of jitter so processes do not reconnect in step. */
export function reconnectDelayMs(attempt: number): number {
  return Math.min(100 * 2 ** (attempt - 1), MAX_RECONNECT_DELAY_MS) + Math.floor(Math.random() * 100);
}

/**
 * Connects to the Redis at `url`; `name` tells the connection apart in logs and in Redis'
 * `CLIENT LIST` (`archety:<name>`). Commands wait in the offline queue until the first
 * connection is ready (or fail as above). `options` override the defaults
 * above (tests use it).
 */
export function connectRedis(url: string, log: Logger, name: string, options: RedisOptions = {}): Redis {
  const where = { redis: name, host: new URL(url).host };
  let lastError: unknown;
  let lost = false;
  const client = new Redis(url, {
    connectionName: `archety:${name}`,
    connectTimeout: CONNECT_TIMEOUT_MS,
    socketTimeout: SOCKET_TIMEOUT_MS,
    maxRetriesPerRequest: 1,
    autoResendUnfulfilledCommands: false,
    retryStrategy(attempt) {
      const delayMs = reconnectDelayMs(attempt);
      lost = true;
      if (attempt === 1 || attempt % 10 === 0) {
        log.warn({ ...where, attempt, delayMs, err: lastError }, 'Redis connection lost; reconnecting');
      }
      return delayMs;
    },
    ...options,
  });
  // Without a listener ioredis prints every failed attempt; the retry strategy logs them instead.
  client.on('error', (err) => {
    lastError = err;
  });
  client.on('ready', () => {
    if (!lost) return;
    lost = false;
    log.info(where, 'Redis connection back');
  });
  return client;
}

/** For `/ready`: true while the connection is up (ioredis' `ready`); false while connecting or reconnecting. */
export function redisReady(client: Redis): boolean {
  return client.status === 'ready';
}

/**
 * `promise`, or a rejection with `error()` once `ms` passed: a Redis command or subscription
 * that is not answered (Redis slow, or gone meanwhile) fails in bounded time. The promise's own
 * later failure stays handled.
 */
export function withDeadline<T>(promise: Promise<T>, ms: number, error: () => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(error()), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/**
 * The part of a Redis key that stands for `value` when that may be personal (a sender's phone
 * number, a user id): 128 bits of its SHA-256, in base64url. What Redis holds, and what `KEYS`
 * or `MONITOR` show an operator, names nobody.
 */
export function redisKeyOf(value: string): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, 22);
}
