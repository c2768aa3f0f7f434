import { afterEach, describe, expect, it, vi } from 'vitest';
import { createActor, createMachine } from 'xstate';
import type { ActorKind } from '../../src/host/ActorKind.ts';
import { isPassivationDue, startIdleSweep, sweepIntervalMs } from '../../src/host/idleSweep.ts';
import { type Cell, createCell } from '../../src/host/mailbox.ts';

const IDLE_MS = 1000;

/** A running cell whose last message was handed over at `lastActive`; its kind says `kindIdle`. */
function runningCell(lastActive: number, kindIdle = true): { cell: Cell; isIdle: ReturnType<typeof vi.fn> } {
  const isIdle = vi.fn(() => kindIdle);
  const kind: ActorKind = {
    name: 'worker',
    passivateEvent: { type: 'passivate' },
    isIdle,
    activate: async () => null,
  };
  const cell = createCell(kind, 'a', []);
  cell.state = 'running';
  cell.actor = createActor(createMachine({ initial: 'idle', states: { idle: {} } }));
  cell.lastActive = lastActive;
  return { cell, isIdle };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('isPassivationDue', () => {
  it('is due for a running actor with an empty mailbox, quiet for idleMs, that its kind says may sleep', () => {
    const { cell } = runningCell(0);
    expect(isPassivationDue(cell, IDLE_MS, IDLE_MS)).toBe(true);
  });

  it('is not due before idleMs have passed since the last message, and does not ask the kind', () => {
    const { cell, isIdle } = runningCell(0);
    expect(isPassivationDue(cell, IDLE_MS - 1, IDLE_MS)).toBe(false);
    expect(isIdle).not.toHaveBeenCalled();
  });

  it('is not due while messages wait in the mailbox', () => {
    const { cell } = runningCell(0);
    cell.queue.push({ event: { type: 'work' }, context: undefined, rejected: () => {} });
    expect(isPassivationDue(cell, IDLE_MS, IDLE_MS)).toBe(false);
  });

  it('is not due when the kind says the actor is in use (a socket is open)', () => {
    const { cell, isIdle } = runningCell(0, false);
    expect(isPassivationDue(cell, IDLE_MS, IDLE_MS)).toBe(false);
    expect(isIdle).toHaveBeenCalledOnce();
  });

  it.each(['activating', 'stopping'] as const)('is not due for a cell that is %s', (state) => {
    const { cell } = runningCell(0);
    cell.state = state;
    expect(isPassivationDue(cell, IDLE_MS, IDLE_MS)).toBe(false);
  });
});

describe('sweepIntervalMs', () => {
  it('sweeps every quarter of the idle time, between 50 ms and 5 s', () => {
    expect(sweepIntervalMs(1000)).toBe(250);
    expect(sweepIntervalMs(100)).toBe(50);
    expect(sweepIntervalMs(60_000)).toBe(5000);
  });
});

describe('startIdleSweep', () => {
  it('passivates the cells that became due at the next sweep, and nothing once stopped', () => {
    vi.useFakeTimers({ now: 0 });
    const due = runningCell(0).cell;
    const busy = runningCell(0, false).cell;
    const passivated: Cell[] = [];
    const stop = startIdleSweep(
      () => [due, busy],
      IDLE_MS,
      (cell) => passivated.push(cell),
    );
    vi.advanceTimersByTime(IDLE_MS - 1);
    expect(passivated).toEqual([]);
    vi.advanceTimersByTime(sweepIntervalMs(IDLE_MS));
    expect(passivated).toEqual([due]);
    stop();
    vi.advanceTimersByTime(10 * IDLE_MS);
    expect(passivated).toEqual([due]);
  });
});
