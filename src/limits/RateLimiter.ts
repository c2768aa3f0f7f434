/**
 * Rate limits by key (a sender, a relay token). In-process token buckets here; the cluster
 * mode backs the same interface with Redis so every node counts together.
 */
import { KeyedLimiter } from './tokenBucket.ts';

export interface RateLimiter {
  /** Takes `cost` tokens for `key`: 0 when allowed, else the seconds to wait. */
  take(key: string, cost?: number): Promise<number>;
  close(): void;
}

export function createLocalRateLimiter(perSecond: number, burst: number): RateLimiter {
  const limiter = new KeyedLimiter(perSecond, burst);
  return {
    async take(key, cost = 1) {
      return limiter.take(key, cost);
    },
    close: () => limiter.close(),
  };
}
