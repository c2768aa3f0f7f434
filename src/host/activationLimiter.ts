/**
 * The activation cap: at most `max` activations run at once; the others wait here, first come
 * first served. A burst of messages for thousands of sleeping actors would otherwise queue
 * thousands of reads in the pool, where they time out (503) instead of waiting.
 */

export interface ActivationLimiter<T> {
  /** Runs `item` now when a slot is free, otherwise as soon as one frees up. */
  submit(item: T): void;
  /** Takes back every item still waiting for a slot (the running ones go on). */
  cancelWaiting(): T[];
}

/**
 * @param max how many `run`s may be in progress at once (an integer, at least 1).
 * @param run starts one activation; it handles its own failures and must not reject.
 */
export function createActivationLimiter<T>(max: number, run: (item: T) => Promise<void>): ActivationLimiter<T> {
  if (!Number.isInteger(max) || max < 1) {
    throw new RangeError(`maxActivations must be an integer of at least 1, got ${max}`);
  }
  let running = 0;
  const waiting: T[] = [];

  async function runInSlot(item: T): Promise<void> {
    running++;
    try {
      await run(item);
    } finally {
      running--;
      const next = waiting.shift();
      if (next !== undefined) void runInSlot(next);
    }
  }

  return {
    submit(item) {
      if (running < max) void runInSlot(item);
      else waiting.push(item);
    },
    cancelWaiting: () => waiting.splice(0),
  };
}
