import { describe, expect, it } from 'vitest';
import { createActivationLimiter } from '../../src/host/activationLimiter.ts';

/** A `run` whose calls stay in progress until the test finishes them. */
function controlledRun() {
  const started: string[] = [];
  const finishers = new Map<string, () => void>();
  const run = (item: string) =>
    new Promise<void>((resolve) => {
      started.push(item);
      finishers.set(item, resolve);
    });
  const finish = async (item: string) => {
    finishers.get(item)?.();
    // Let the limiter's `finally` start the next waiting item.
    await new Promise((r) => setImmediate(r));
  };
  return { run, started, finish };
}

describe('the activation limiter', () => {
  it('runs at most max items at once and starts the waiting ones in arrival order as slots free up', async () => {
    const { run, started, finish } = controlledRun();
    const limiter = createActivationLimiter(2, run);
    for (const item of ['a', 'b', 'c', 'd']) limiter.submit(item);
    expect(started).toEqual(['a', 'b']);
    await finish('b');
    expect(started).toEqual(['a', 'b', 'c']);
    await finish('a');
    expect(started).toEqual(['a', 'b', 'c', 'd']);
  });

  it('starts an item at once, synchronously, when a slot is free', () => {
    const { run, started } = controlledRun();
    const limiter = createActivationLimiter(1, run);
    limiter.submit('a');
    expect(started).toEqual(['a']);
  });

  it('hands back the waiting items on cancelWaiting and never runs them, while the running ones go on', async () => {
    const { run, started, finish } = controlledRun();
    const limiter = createActivationLimiter(1, run);
    for (const item of ['a', 'b', 'c']) limiter.submit(item);
    expect(limiter.cancelWaiting()).toEqual(['b', 'c']);
    await finish('a');
    expect(started).toEqual(['a']);
    expect(limiter.cancelWaiting()).toEqual([]);
  });

  it('frees the slot of an item whose run has finished, so a later submit runs at once', async () => {
    const { run, started, finish } = controlledRun();
    const limiter = createActivationLimiter(1, run);
    limiter.submit('a');
    await finish('a');
    limiter.submit('b');
    expect(started).toEqual(['a', 'b']);
  });

  it.each([0, -1, 1.5, Number.NaN])('refuses a cap of %s with a RangeError', (max) => {
    expect(() => createActivationLimiter(max, async () => {})).toThrow(RangeError);
  });
});
