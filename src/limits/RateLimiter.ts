/**
 * Rate limits by key (a sender, a relay token). In-process token buckets here; in cluster mode
 * `createRedisRateLimiter` backs the same interface with Redis so every process counts together.
 */
import { KeyedLimiter } from './tokenBucket.ts';

export interface RateLimiter {
  /** Takes `cost` tokens for `key`: 0 when allowed, else the seconds to wait. */
  take(key: string, cost?: number): Promise<number>;
  close(): void;
}

/** Makes the limiter named `name` (it names its Redis keys): `perSecond` sustained, `burst` at once. */
export type RateLimiterFactory = (name: string, perSecond: number, burst: number) => RateLimiter;

export function createLocalRateLimiter(perSecond: number, burst: number): RateLimiter {
  const limiter = new KeyedLimiter(perSecond, burst);
  return {
    async take(key, cost = 1) {
      return limiter.take(key, cost);
    },
    close: () => limiter.close(),
  };
}

/** Single-node mode: every limiter in this process. */
export const localRateLimiters: RateLimiterFactory = (_name, perSecond, burst) =>
  createLocalRateLimiter(perSecond, burst);
