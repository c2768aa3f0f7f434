/** Token buckets for rate limits: `rate` tokens per second, at most `burst` saved up. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now = performance.now(),
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Takes `cost` tokens (all or none); false when there are not enough. */
  take(now = performance.now(), cost = 1): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens < cost) return false;
    this.tokens -= cost;
    return true;
  }

  /** Seconds until `cost` tokens are available. */
  retryAfter(cost = 1): number {
    return Math.max(1, Math.ceil((cost - this.tokens) / this.rate));
  }

  /** True when the bucket is full again (it can be forgotten). */
  isFull(now = performance.now()): boolean {
    return this.tokens + ((now - this.last) / 1000) * this.rate >= this.burst;
  }
}

/** One bucket per key (e.g. per client IP), forgetting buckets that refilled. */
export class KeyedLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly sweep: NodeJS.Timeout;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {
    this.sweep = setInterval(() => {
      const now = performance.now();
      for (const [key, bucket] of this.buckets) if (bucket.isFull(now)) this.buckets.delete(key);
    }, 10_000);
    this.sweep.unref();
  }

  /** Takes `cost` tokens for `key`; returns 0 when allowed, else the seconds to wait. */
  take(key: string, cost = 1): number {
    const bucket = this.buckets.get(key) ?? new TokenBucket(this.rate, this.burst);
    this.buckets.set(key, bucket);
    return bucket.take(performance.now(), cost) ? 0 : bucket.retryAfter(cost);
  }

  close(): void {
    clearInterval(this.sweep);
  }
}
