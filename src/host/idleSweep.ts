/**
 * Idle passivation: a timer looks over the live actors and passivates those that have had no
 * message for `idleMs` and that their kind says may sleep (no sockets, nothing pending), so
 * memory holds only the actors in use.
 */
import type { Cell } from './mailbox.ts';

/** Whether the sweep at `now` (ms) should passivate `cell`. The kind is asked last: it reads a snapshot. */
export function isPassivationDue(cell: Cell, now: number, idleMs: number): boolean {
  return (
    cell.state === 'running' &&
    cell.actor !== undefined &&
    cell.queue.length === 0 &&
    now - cell.lastActive >= idleMs &&
    cell.kind.isIdle(cell.actor.getSnapshot())
  );
}

/**
 * A quarter of `idleMs`, so an actor sleeps at most about 1.25 × `idleMs` after its last
 * message; never under 50 ms (a tiny idle time must not spin the event loop) nor over 5 s (a
 * long one still frees memory soon after it is due).
 */
export function sweepIntervalMs(idleMs: number): number {
  return Math.min(5000, Math.max(50, idleMs / 4));
}

/**
 * Sweeps `cells` every `sweepIntervalMs(idleMs)`, calling `passivate` for each one due.
 * The timer does not keep the process alive. Returns the function that stops it.
 */
export function startIdleSweep(
  cells: () => Iterable<Cell>,
  idleMs: number,
  passivate: (cell: Cell) => void,
): () => void {
  const timer = setInterval(() => {
    const now = Date.now();
    for (const cell of cells()) {
      if (isPassivationDue(cell, now, idleMs)) passivate(cell);
    }
  }, sweepIntervalMs(idleMs));
  timer.unref();
  return () => clearInterval(timer);
}
