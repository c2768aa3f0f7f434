/**
 * Resilience around outside calls (the model, the moderation API, media fetches): a timeout
 * per attempt, a retry with backoff for transient failures, and a circuit breaker that stops
 * calling a dependency that keeps failing. The breaker's state is exported as a metric.
 */
import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  ExponentialBackoff,
  handleWhen,
  retry,
  TaskCancelledError,
  TimeoutStrategy,
  timeout,
  wrap,
} from 'cockatiel';
import type { Logger } from '../observability/logger.ts';

export interface Resilient {
  /** Runs `fn` with the policies; `signal` aborts when the attempt times out. */
  run<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T>;
  /** 0 closed, 1 open, 2 half-open, 3 isolated. */
  state(): number;
}

export interface ResilienceOptions {
  name: string;
  timeoutMs: number;
  attempts: number;
  breakerFailures: number;
  halfOpenAfterMs: number;
  log: Logger;
  /** Errors that are the caller's fault (a 400) are not retried and do not trip the breaker. */
  isPermanent?: (err: Error) => boolean;
}

export function createResilience(o: ResilienceOptions): Resilient {
  const transient = handleWhen((err) => !(err instanceof BrokenCircuitError) && !(o.isPermanent?.(err) ?? false));
  const breaker = circuitBreaker(transient, {
    halfOpenAfter: o.halfOpenAfterMs,
    breaker: new ConsecutiveBreaker(o.breakerFailures),
  });
  breaker.onBreak(() => o.log.warn({ dependency: o.name }, 'circuit breaker opened'));
  breaker.onReset(() => o.log.info({ dependency: o.name }, 'circuit breaker closed'));
  const policy = wrap(
    retry(transient, {
      maxAttempts: Math.max(0, o.attempts - 1),
      backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }),
    }),
    breaker,
    timeout(o.timeoutMs, TimeoutStrategy.Aggressive),
  );
  return {
    run: (fn) => policy.execute(({ signal }) => fn(signal)),
    state: () => breaker.state,
  };
}

export function isTimeout(err: unknown): boolean {
  return err instanceof TaskCancelledError;
}

export { CircuitState };
