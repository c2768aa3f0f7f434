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

  /** Takes one token; false when none is left. */
  take(now = performance.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Seconds until a token is available. */
  retryAfter(): number {
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
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

  /** Takes a token for `key`; returns 0 when allowed, else the seconds to wait. */
  take(key: string): number {
    let bucket = this.buckets.get(key);
    if (!bucket) this.buckets.set(key, (bucket = new TokenBucket(this.rate, this.burst)));
    return bucket.take() ? 0 : bucket.retryAfter();
  }

  close(): void {
    clearInterval(this.sweep);
  }
}
