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
  DelegateBackoff,
  handleWhen,
  type IRetryBackoffContext,
  retry,
  TaskCancelledError,
  TimeoutStrategy,
  timeout,
  wrap,
} from 'cockatiel';
import type { Logger } from '../observability/logger.ts';

export interface Resilient {
  /**
   * Runs `fn` with the policies; the signal `fn` gets aborts when the attempt times out or when
   * the caller's `signal` aborts (then nothing is retried).
   */
  run<T>(fn: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T>;
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
  /**
   * How long a failure asks to be left alone (a 429's Retry-After), in ms: the retry waits that
   * long instead of the backoff, and is not made when it is longer than `timeoutMs`.
   */
  retryAfterMs?: (err: Error) => number | undefined;
}

/** A failure that trying again cannot fix (e.g. a refused attachment): never retried, never counted by a breaker. */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

export function createResilience(o: ResilienceOptions): Resilient {
  const isTransient = (err: Error) =>
    !(err instanceof BrokenCircuitError) && !(err instanceof PermanentError) && !(o.isPermanent?.(err) ?? false);
  const breaker = circuitBreaker(handleWhen(isTransient), {
    halfOpenAfter: o.halfOpenAfterMs,
    breaker: new ConsecutiveBreaker(o.breakerFailures),
  });
  breaker.onBreak(() => o.log.warn({ dependency: o.name }, 'circuit breaker opened'));
  breaker.onReset(() => o.log.info({ dependency: o.name }, 'circuit breaker closed'));
  // Waiting out a Retry-After longer than one attempt's limit would only delay the fallback reply.
  const retryable = handleWhen((err) => isTransient(err) && (o.retryAfterMs?.(err) ?? 0) <= o.timeoutMs);
  const policy = wrap(
    retry(retryable, {
      maxAttempts: Math.max(0, o.attempts - 1),
      backoff: new DelegateBackoff<IRetryBackoffContext<unknown>>(({ attempt, result }) => {
        const asked = 'error' in result ? o.retryAfterMs?.(result.error as Error) : undefined;
        return asked ?? Math.min(1000, 100 * 2 ** (attempt - 1));
      }),
    }),
    breaker,
    timeout(o.timeoutMs, TimeoutStrategy.Aggressive),
  );
  return {
    run: (fn, signal) => policy.execute(({ signal: attempt }) => fn(attempt), signal),
    state: () => breaker.state,
  };
}

export function isTimeout(err: unknown): boolean {
  return err instanceof TaskCancelledError;
}

export { CircuitState };
