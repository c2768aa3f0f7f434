/**
 * The actor host: activates actors on first use, feeds each one its messages one at a time,
 * and passivates it when idle. It knows nothing of miniapps or conversations: each kind plugs
 * in through `ActorKind`. This file is the registry of live actors (one cell per key), the
 * public API and shutdown; the parts live beside it:
 * - `activateActor.ts` — ownership, epoch fence, rehydration, start;
 * - `activationLimiter.ts` — at most `maxActivations` activations at once;
 * - `mailbox.ts` — the cell, delivery while not `busy`, passivation in turn;
 * - `idleSweep.ts` — passivation of idle actors;
 * - `Ownership.ts` — the seam cluster mode plugs into (`localOwnership.ts` on a single node).
 *
 * An actor stops in one of three ways: passivated (it saves its state and reaches its final
 * state; its ownership is released), failed (it crashed; released too), or fenced: its lease
 * was lost (`Ownership.onLost`), so another process may run it already. A fenced actor is
 * stopped at once, mid-work, without saving (the epoch fence would refuse its writes anyway),
 * its waiting messages are refused with `session_unavailable`, and nothing is released.
 */
import type { AnyActorRef, EventObject, SnapshotFrom } from 'xstate';
import { AppError } from '../errors.ts';
import { currentContext } from '../observability/context.ts';
import { type Logger, maskPhones } from '../observability/logger.ts';
import { type ActorKind, actorKey } from './ActorKind.ts';
import { activateActor } from './activateActor.ts';
import { createActivationLimiter } from './activationLimiter.ts';
import { startIdleSweep } from './idleSweep.ts';
import { type Cell, createCell, type Envelope, passivate, pump, rejectQueue } from './mailbox.ts';
import type { Ownership } from './Ownership.ts';

export type { ActorKind } from './ActorKind.ts';
export type { Ownership } from './Ownership.ts';

export interface ActorHostOptions {
  /** Makes this process the owner in `actor_leases` and returns the new epoch. */
  bumpEpoch(key: string): Promise<number>;
  ownership: Ownership;
  /** How long (ms) an actor stays without messages before it may be passivated. */
  idleMs: number;
  /** How many activations may run at once (`activationLimiter.ts`); at least 1. */
  maxActivations: number;
  log: Logger;
}

export interface ActorHost {
  register(kind: ActorKind): void;
  /** Delivers `event` to the actor (activating it if needed); resolves once it was handed over. */
  send<E extends EventObject>(kind: string, id: string, event: E): Promise<void>;
  /** `send` without a promise (the hot path): `rejected` hears when it cannot be delivered. */
  post<E extends EventObject>(kind: string, id: string, event: E, rejected: (err: Error) => void): void;
  /** Delivers `event` only to a live actor (wherever it runs); never activates one, and drops it when none is. */
  tell<E extends EventObject>(kind: string, id: string, event: E): void;
  /** Sends the event `build(reply)` and resolves with what the actor replies. */
  ask<R>(kind: string, id: string, build: (reply: (value: R) => void) => EventObject, timeoutMs?: number): Promise<R>;
  /** The snapshot of the actor when it is running in this process (for cheap reads such as authorization). */
  peek(kind: string, id: string): SnapshotFrom<AnyActorRef> | undefined;
  /** Whether the actor is active, activating or stopping in this process. */
  has(kind: string, id: string): boolean;
  /** Live actors by kind. */
  counts(): Record<string, number>;
  /** Passivates every actor (saving state) and stops taking messages. */
  stopAll(timeoutMs: number): Promise<void>;
}

const shuttingDown = () => new AppError('shutting_down', 'the server is shutting down');

export function createActorHost(options: ActorHostOptions): ActorHost {
  const { log } = options;
  const kinds = new Map<string, ActorKind>();
  /** Every actor key active, activating or stopping here: all messages for a key meet in its cell. */
  const cells = new Map<string, Cell>();
  /** Wakes `stopAll` whenever an actor stopped. */
  const stopWaiters = new Set<() => void>();
  let closing = false;

  const activations = createActivationLimiter<Cell>(options.maxActivations, (cell) =>
    activateActor(cell, {
      ownership: options.ownership,
      bumpEpoch: options.bumpEpoch,
      log,
      forget,
      stopped: finish,
      closing: () => closing,
    }),
  );
  const stopSweep = startIdleSweep(
    () => cells.values(),
    options.idleMs,
    (cell) => passivate(cell, log),
  );

  options.ownership.onLost((key) => {
    const cell = cells.get(key);
    if (cell?.owned) fence(cell);
  });

  /** Drops `cell` from the registry, unless a newer cell of the same key replaced it. */
  function forget(cell: Cell): void {
    if (cells.get(cell.key) === cell) cells.delete(cell.key);
  }

  function start(kind: ActorKind, id: string, queue: Envelope[]): void {
    const cell = createCell(kind, id, queue);
    cells.set(cell.key, cell);
    activations.submit(cell);
  }

  /** The actor of `cell` stopped for good: forget it, release it, and serve late messages. */
  function finish(cell: Cell, output: unknown, error?: unknown): void {
    if (cells.get(cell.key) !== cell) return;
    cells.delete(cell.key);
    if (error) log.error({ err: error, actor: maskPhones(cell.key) }, 'actor crashed');
    cell.kind.onStopped?.(cell.id, output);
    cell.owned = false;
    options.ownership
      .release(cell.key)
      .catch((err) => log.warn({ err, actor: maskPhones(cell.key) }, 'lease release failed'));
    for (const w of stopWaiters) w();
    // Messages that arrived while it was stopping start a new activation.
    if (cell.queue.length) {
      if (closing) rejectQueue(cell.queue, shuttingDown());
      else start(cell.kind, cell.id, cell.queue);
    }
  }

  /**
   * The lease of `cell` was lost: stop its actor now, without passivating (another process may
   * be running it), and refuse what waits for it; the next message activates it again, here or
   * wherever the lease is. An actor still activating is never started (`activateActor.ts`).
   */
  function fence(cell: Cell): void {
    const started = cell.state !== 'activating';
    cells.delete(cell.key);
    cell.state = 'fenced';
    // Nothing to release: the lease is gone.
    cell.owned = false;
    log.debug({ actor: maskPhones(cell.key) }, 'actor fenced: its lease was lost');
    rejectQueue(
      cell.queue,
      new AppError('session_unavailable', `${maskPhones(cell.key)} stopped: this node lost its lease`),
    );
    cell.actor?.stop();
    if (started) cell.kind.onStopped?.(cell.id, { reason: 'fenced', message: 'lease lost' });
    for (const w of stopWaiters) w();
  }

  function enqueue(kindName: string, id: string, envelope: Envelope): void {
    const kind = kinds.get(kindName);
    if (!kind) {
      envelope.rejected(new Error(`unknown actor kind ${kindName}`));
      return;
    }
    if (closing) {
      envelope.rejected(shuttingDown());
      return;
    }
    const cell = cells.get(actorKey(kindName, id));
    if (cell) {
      cell.queue.push(envelope);
      pump(cell);
    } else {
      start(kind, id, [envelope]);
    }
  }

  /** Resolves once every actor stopped, or at `deadline` (ms since the epoch). */
  async function allStopped(deadline: number): Promise<void> {
    while (cells.size && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const done = () => {
          stopWaiters.delete(done);
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(done, Math.max(1, deadline - Date.now()));
        stopWaiters.add(done);
      });
    }
  }

  const host: ActorHost = {
    register(kind) {
      kinds.set(kind.name, kind);
    },

    send(kindName, id, event) {
      return new Promise<void>((delivered, rejected) =>
        enqueue(kindName, id, { event, context: currentContext(), delivered, rejected }),
      );
    },

    post(kindName, id, event, rejected) {
      enqueue(kindName, id, { event, context: currentContext(), rejected });
    },

    tell(kindName, id, event) {
      if (cells.has(actorKey(kindName, id))) host.post(kindName, id, event, () => {});
    },

    ask<R>(kindName: string, id: string, build: (reply: (value: R) => void) => EventObject, timeoutMs = 10_000) {
      return new Promise<R>((resolve, rejected) => {
        const timer = setTimeout(
          () => rejected(new AppError('session_unavailable', `${kindName} ${id} did not answer in time`)),
          timeoutMs,
        );
        const reply = (value: R) => {
          clearTimeout(timer);
          resolve(value);
        };
        host.send(kindName, id, build(reply)).catch((err) => {
          clearTimeout(timer);
          rejected(err);
        });
      });
    },

    peek(kindName, id) {
      const cell = cells.get(actorKey(kindName, id));
      return cell?.state === 'running' ? cell.actor?.getSnapshot() : undefined;
    },

    has(kindName, id) {
      return cells.has(actorKey(kindName, id));
    },

    counts() {
      const counts: Record<string, number> = {};
      for (const name of kinds.keys()) counts[name] = 0;
      for (const cell of cells.values()) counts[cell.kind.name] = (counts[cell.kind.name] ?? 0) + 1;
      return counts;
    },

    async stopAll(timeoutMs) {
      closing = true;
      stopSweep();
      // Actors not yet being activated have nothing to save: their messages are refused.
      for (const cell of activations.cancelWaiting()) {
        cells.delete(cell.key);
        rejectQueue(cell.queue, shuttingDown());
      }
      for (const cell of cells.values()) passivate(cell, log);
      await allStopped(Date.now() + timeoutMs);
      if (cells.size)
        log.warn({ actors: [...cells.keys()].map(maskPhones) }, 'actors still running at the shutdown deadline');
    },
  };
  return host;
}
