/**
 * A rate limit shared by every process of a cluster: rate-limiter-flexible's Redis limiter
 * (one atomic Lua script per take: INCRBY on a key that expires with its window).
 *
 * How it differs from the in-process token bucket: rate-limiter-flexible counts fixed windows,
 * it has no token bucket. A window of `burst / perSecond` seconds (rounded to whole seconds,
 * at least 1) holding `burst` points (or `perSecond × window`, when that is more) keeps both
 * numbers: `burst` at once, `perSecond` on average. What differs:
 * - the budget comes back all at once when the window ends, not a token every 1/`perSecond`
 *   s, so a refused caller is told to wait up to a window (`burst / perSecond` s) rather than
 *   one token's time, and across a window's end up to 2 × `burst` can pass in a short time;
 * - a refused take still counts within its window (the script increments first): a smaller
 *   take after a refused large one is refused too, until the window ends.
 * BurstyRateLimiter (a per-second window plus a burst pool) was not used: its burst pool
 * refills on a window of its own, which adds to the sustained rate instead of capping it.
 *
 * When Redis does not answer (RedisGuard), each process limits alone with the in-process
 * token bucket of the same numbers: the budget holds per process, and requests go on.
 */
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { redisKeyOf } from '../cluster/redis.ts';
import type { Logger } from '../observability/logger.ts';
import { createLocalRateLimiter, type RateLimiter, type RateLimiterFactory } from './RateLimiter.ts';
import { RedisGuard } from './RedisGuard.ts';

export interface RedisRateLimiterOptions {
  /** A client without a `keyPrefix` of its own: `prefix` is the whole prefix. */
  redis: Redis;
  /** `REDIS_PREFIX`. */
  prefix: string;
  /** Names the limiter's keys (`<prefix>rl:<name>:<hash of the key>`: `redisKeyOf`) and its log lines. */
  name: string;
  /** Sustained rate, per second (may be below 1: 20 a minute is 1/3). */
  perSecond: number;
  /** Most takes at once after a quiet spell. */
  burst: number;
  log: Logger;
  /** How long (ms) to wait for Redis before limiting alone (default 500). */
  timeoutMs?: number;
}

/** The fixed window that keeps a token bucket's burst and sustained rate (see the file's comment). */
export function fixedWindowOf(perSecond: number, burst: number): { points: number; duration: number } {
  if (!(perSecond > 0) || !(burst >= 1)) {
    throw new Error(`a rate limit needs a rate above 0 and a burst of at least 1 (got ${perSecond}/s, ${burst})`);
  }
  // rate-limiter-flexible keeps whole seconds; a window under 1 s would never expire.
  const duration = Math.max(1, Math.round(burst / perSecond));
  return { duration, points: Math.max(burst, Math.round(perSecond * duration)) };
}

export function createRedisRateLimiter(options: RedisRateLimiterOptions): RateLimiter {
  const { redis, prefix, name, perSecond, burst, log } = options;
  const shared = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: `${prefix}rl:${name}`,
    ...fixedWindowOf(perSecond, burst),
    // Not `rejectIfRedisNotReady`: it refuses while the client first connects. RedisGuard
    // falls back at once only while the connection is lost.
  });
  const alone = createLocalRateLimiter(perSecond, burst);
  const guard = new RedisGuard(redis, log, `the ${name} rate limit`, options.timeoutMs);

  /** 0 when allowed, else whole seconds until the window ends; throws when Redis did not answer. */
  function takeShared(key: string, cost: number): Promise<number> {
    return shared.consume(redisKeyOf(key), cost).then(
      () => 0,
      (refusal: unknown) => {
        if (refusal instanceof RateLimiterRes) return Math.max(1, Math.ceil(refusal.msBeforeNext / 1000));
        throw refusal;
      },
    );
  }

  return {
    async take(key, cost = 1) {
      return (await guard.attempt(() => takeShared(key, cost))) ?? alone.take(key, cost);
    },
    close: () => alone.close(),
  };
}

/** Cluster mode: every limiter in Redis under `prefix`. */
export function redisRateLimiters(options: Pick<RedisRateLimiterOptions, 'redis' | 'prefix' | 'log' | 'timeoutMs'>) {
  const factory: RateLimiterFactory = (name, perSecond, burst) =>
    createRedisRateLimiter({ ...options, name, perSecond, burst });
  return factory;
}
