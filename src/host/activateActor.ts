/**
 * One activation, in the order that keeps a single effective writer: take ownership, bump the
 * epoch (fencing every earlier owner's writes), rehydrate through the kind, then start the
 * actor and open its mailbox. Callers that arrive meanwhile share this activation: their
 * messages wait in the cell's queue, which is delivered once the actor runs or rejected when
 * the activation fails. When the lease is lost meanwhile (the host then fenced the cell and
 * refused its messages), the activation stops where it is: the actor is never started, and
 * nothing is released (the lease is gone already).
 */
import { AppError } from '../errors.ts';
import { type Logger, maskPhones } from '../observability/logger.ts';
import { type Cell, passivate, pump, rejectQueue } from './mailbox.ts';
import type { Ownership } from './Ownership.ts';

export interface ActivationDeps {
  ownership: Ownership;
  /** Makes this process the owner in `actor_leases` and returns the new epoch. */
  bumpEpoch(key: string): Promise<number>;
  log: Logger;
  /** Drops the cell from the host: its activation ended without an actor. */
  forget(cell: Cell): void;
  /** The started actor stopped for good: final state (with its output) or failure (`error`). */
  stopped(cell: Cell, output: unknown, error?: unknown): void;
  /** True once the host is shutting down: an actor that starts then is passivated at once. */
  closing(): boolean;
}

/** Activates `cell`; never rejects (a failure rejects the cell's queued messages instead). */
export async function activateActor(cell: Cell, deps: ActivationDeps): Promise<void> {
  const { ownership, log } = deps;
  try {
    if (!(await ownership.acquire(cell.key))) {
      throw new AppError('session_unavailable', `${maskPhones(cell.key)} is owned by another node`);
    }
    cell.owned = true;
    cell.epoch = await deps.bumpEpoch(cell.key);
    if (fenced(cell)) return;
    const actor = await cell.kind.activate(cell.id, cell.epoch);
    if (fenced(cell)) return;
    if (!actor) {
      deps.forget(cell);
      cell.owned = false;
      await ownership.release(cell.key);
      rejectQueue(cell.queue, new AppError('session_not_found', `no ${cell.kind.name} ${cell.id}`));
      return;
    }
    cell.actor = actor;
    cell.state = 'running';
    actor.subscribe({
      next: (snapshot) => {
        if (snapshot.status === 'done') deps.stopped(cell, snapshot.output);
        // Only a mailbox with something waiting (it may have left `busy`) needs a delivery.
        else if (cell.queue.length || cell.state === 'stopping') pump(cell);
      },
      error: (err) => deps.stopped(cell, { reason: 'failed', message: String(err) }, err),
    });
    actor.start();
    log.debug({ actor: maskPhones(cell.key), epoch: cell.epoch }, 'actor activated');
    if (deps.closing()) passivate(cell, log);
    else pump(cell);
  } catch (err) {
    deps.forget(cell);
    log.warn({ err, actor: maskPhones(cell.key) }, 'actor activation failed');
    rejectQueue(cell.queue, err instanceof Error ? err : new Error(String(err)));
    // Another node may take the actor now rather than when a lease would have expired.
    if (cell.owned) {
      cell.owned = false;
      await ownership.release(cell.key).catch((e) => log.warn({ err: e }, 'releasing ownership failed'));
    }
  }
}

/** Whether the host fenced `cell` (its lease was lost) while this activation awaited something. */
function fenced(cell: Cell): boolean {
  return cell.state === 'fenced';
}
