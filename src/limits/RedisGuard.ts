/**
 * How the cluster-wide budgets meet an unreachable Redis: they fall back to this process's own
 * budget instead of failing requests. A budget is a guard against abuse, not a correctness
 * guarantee, so while Redis is away each process keeps enforcing the same limits alone (the
 * cluster as a whole then allows up to N times the budget), and the relay and the sockets go
 * on working. The guard bounds every Redis call with a deadline (a cut-off connection can
 * leave commands waiting long after a client needs an answer) and says so once per outage:
 * one warn line when Redis stops answering, one info line when it answers again.
 */
import type { Redis } from 'ioredis';
import { withDeadline } from '../cluster/redis.ts';
import type { Logger } from '../observability/logger.ts';

/** How long (ms) a budget waits for Redis before it decides alone. */
export const REDIS_BUDGET_TIMEOUT_MS = 500;

/** Connection states in which ioredis would only queue a command: not worth waiting for. */
const DISCONNECTED = new Set(['reconnecting', 'close', 'end']);

export class RedisGuard {
  private down = false;

  constructor(
    private readonly redis: Redis,
    private readonly log: Logger,
    /** What falls back, for the log lines ("the relay rate limit"). */
    private readonly what: string,
    private readonly timeoutMs = REDIS_BUDGET_TIMEOUT_MS,
  ) {}

  /** `call`'s answer, or undefined when Redis did not give one in time: the caller decides alone. */
  async attempt<T>(call: () => Promise<T>): Promise<T | undefined> {
    if (DISCONNECTED.has(this.redis.status)) {
      this.failed(new Error(`the Redis connection is ${this.redis.status}`));
      return undefined;
    }
    try {
      const answer = await withDeadline(
        call(),
        this.timeoutMs,
        () => new Error(`Redis gave no answer within ${this.timeoutMs} ms`),
      );
      this.answered();
      return answer;
    } catch (err) {
      this.failed(err);
      return undefined;
    }
  }

  private failed(err: unknown): void {
    if (this.down) return;
    this.down = true;
    this.log.warn({ err }, `Redis is not answering: ${this.what} is enforced by each process alone until it does`);
  }

  private answered(): void {
    if (!this.down) return;
    this.down = false;
    this.log.info(`Redis answers again: ${this.what} is cluster-wide again`);
  }
}
