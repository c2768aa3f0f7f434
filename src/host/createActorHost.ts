/**
 * The actor host: activates actors on first use (ownership, epoch fence, rehydration), feeds
 * each one its messages one at a time, and passivates it when idle. It knows nothing of
 * miniapps or conversations: each kind plugs in through `ActorKind`.
 *
 * Mailbox: messages for an actor queue here and are delivered while the actor is not tagged
 * `busy`; an actor waiting on I/O that must not interleave (a photo being analysed, older
 * ops being read) tags its state `busy` and the queue waits. Events an actor's own services
 * send back to it (a commit's outcome) bypass the mailbox.
 */
import type { AnyActorRef, EventObject, SnapshotFrom } from 'xstate';
import { AppError } from '../errors.ts';
import { currentContext, type RequestContext, withContext } from '../observability/context.ts';
import { type Logger, maskPhones } from '../observability/logger.ts';

export interface ActorKind<TEvent extends EventObject = EventObject> {
  /** Actor keys are `<name>:<id>`. */
  readonly name: string;
  /**
   * Builds (not starts) the actor for `id`, rehydrated from the store, whose writes carry
   * `epoch`; null when there is no such actor.
   */
  activate(id: string, epoch: number): Promise<AnyActorRef | null>;
  /** True when the actor may be passivated (no sockets, nothing pending). */
  isIdle(snapshot: SnapshotFrom<AnyActorRef>): boolean;
  /** The event that asks the actor to save its state and reach its final state. */
  readonly passivateEvent: TEvent;
  /** After the actor stopped for good (passivated, fenced or failed), with its output. */
  onStopped?(id: string, output: unknown): void;
}

/** Who may run an actor. Single node: always this process; cluster mode: a Redlock lease. */
export interface Ownership {
  acquire(key: string): Promise<boolean>;
  release(key: string): Promise<void>;
}

export interface ActorHostOptions {
  /** Makes this process the owner in `actor_leases` and returns the new epoch. */
  bumpEpoch(key: string): Promise<number>;
  ownership: Ownership;
  idleMs: number;
  /**
   * Activations run at most this many at once; the others wait their turn here. A burst of
   * messages for thousands of sleeping actors would otherwise queue thousands of reads in the
   * pool, where they time out (503) instead of waiting.
   */
  maxActivations: number;
  log: Logger;
}

interface Envelope {
  event: EventObject;
  /** The correlation context of the sender, restored while the actor handles the event. */
  context: RequestContext | undefined;
  delivered?: () => void;
  rejected: (err: Error) => void;
}

interface Cell {
  kind: ActorKind;
  id: string;
  key: string;
  state: 'activating' | 'running' | 'stopping';
  actor?: AnyActorRef;
  epoch: number;
  queue: Envelope[];
  lastActive: number;
  /** A delivery is scheduled. */
  pumping: boolean;
  passivateSent: boolean;
}

export interface ActorHost {
  register(kind: ActorKind): void;
  /** Delivers `event` to the actor (activating it if needed); resolves once it was handed over. */
  send<E extends EventObject>(kind: string, id: string, event: E): Promise<void>;
  /** `send` without a promise (the hot path): `rejected` hears when it cannot be delivered. */
  post<E extends EventObject>(kind: string, id: string, event: E, rejected: (err: Error) => void): void;
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

export function createActorHost(options: ActorHostOptions): ActorHost {
  const kinds = new Map<string, ActorKind>();
  const cells = new Map<string, Cell>();
  const stopWaiters = new Set<() => void>();
  /** Activations in progress, and cells waiting for one to finish. */
  let activating = 0;
  const waitingActivation: Cell[] = [];
  let closing = false;
  const { log } = options;

  const busy = (actor: AnyActorRef) => {
    const snapshot = actor.getSnapshot();
    return snapshot.status !== 'active' || snapshot.hasTag('busy');
  };

  /**
   * Delivers queued messages, in a microtask: never from inside the actor's own processing
   * (a snapshot listener runs there), where a send would only be queued by XState, the actor
   * would still look idle, and the next message would arrive in a state that drops it.
   */
  function pump(cell: Cell): void {
    if (cell.pumping) return;
    cell.pumping = true;
    queueMicrotask(() => {
      cell.pumping = false;
      deliver(cell);
    });
  }

  function deliver(cell: Cell): void {
    const actor = cell.actor;
    if (cell.state === 'activating' || !actor) return;
    while (cell.state === 'running' && cell.queue.length && !busy(actor)) {
      const envelope = cell.queue.shift() as Envelope;
      cell.lastActive = Date.now();
      // Whatever the actor starts for this event (services, their log lines) carries the
      // sender's correlation id, not that of whatever woke the mailbox.
      if (envelope.context) withContext(envelope.context, () => actor.send(envelope.event));
      else actor.send(envelope.event);
      envelope.delivered?.();
    }
    // Passivation waits its turn like any message: a busy actor finishes what it is doing.
    if (cell.state === 'stopping' && !cell.passivateSent && !busy(actor)) {
      cell.passivateSent = true;
      actor.send(cell.kind.passivateEvent);
    }
  }

  function finish(cell: Cell, output: unknown, error?: unknown): void {
    if (cells.get(cell.key) !== cell) return;
    cells.delete(cell.key);
    if (error) log.error({ err: error, actor: maskPhones(cell.key) }, 'actor crashed');
    cell.kind.onStopped?.(cell.id, output);
    options.ownership
      .release(cell.key)
      .catch((err) => log.warn({ err, actor: maskPhones(cell.key) }, 'lease release failed'));
    for (const w of stopWaiters) w();
    // Messages that arrived while it was stopping start a new activation.
    if (cell.queue.length) {
      if (closing) reject(cell.queue, new AppError('shutting_down', 'the server is shutting down'));
      else start(cell.kind, cell.id, cell.queue);
    }
  }

  function reject(queue: Envelope[], err: Error): void {
    for (const e of queue.splice(0)) e.rejected(err);
  }

  function start(kind: ActorKind, id: string, queue: Envelope[]): Cell {
    const key = `${kind.name}:${id}`;
    const cell: Cell = {
      kind,
      id,
      key,
      state: 'activating',
      epoch: 0,
      queue,
      lastActive: Date.now(),
      pumping: false,
      passivateSent: false,
    };
    cells.set(key, cell);
    if (activating < options.maxActivations) void activate(cell);
    else waitingActivation.push(cell);
    return cell;
  }

  async function activate(cell: Cell): Promise<void> {
    activating++;
    try {
      await rehydrate(cell);
    } finally {
      activating--;
      const next = waitingActivation.shift();
      if (next) void activate(next);
    }
  }

  async function rehydrate(cell: Cell): Promise<void> {
    try {
      if (!(await options.ownership.acquire(cell.key))) {
        throw new AppError('session_unavailable', `${maskPhones(cell.key)} is owned by another node`);
      }
      cell.epoch = await options.bumpEpoch(cell.key);
      const actor = await cell.kind.activate(cell.id, cell.epoch);
      if (!actor) {
        cells.delete(cell.key);
        await options.ownership.release(cell.key);
        reject(cell.queue, new AppError('session_not_found', `no ${cell.kind.name} ${cell.id}`));
        return;
      }
      cell.actor = actor;
      cell.state = 'running';
      actor.subscribe({
        next: (snapshot) => {
          if (snapshot.status === 'done') finish(cell, snapshot.output);
          // Only a mailbox with something waiting (it may have left `busy`) needs a delivery.
          else if (cell.queue.length || cell.state === 'stopping') pump(cell);
        },
        error: (err) => finish(cell, { reason: 'failed', message: String(err) }, err),
      });
      actor.start();
      log.debug({ actor: maskPhones(cell.key), epoch: cell.epoch }, 'actor activated');
      if (closing) passivate(cell);
      else pump(cell);
    } catch (err) {
      cells.delete(cell.key);
      log.warn({ err, actor: maskPhones(cell.key) }, 'actor activation failed');
      reject(cell.queue, err instanceof Error ? err : new Error(String(err)));
    }
  }

  function passivate(cell: Cell): void {
    if (cell.state !== 'running' || !cell.actor) return;
    cell.state = 'stopping';
    log.debug({ actor: maskPhones(cell.key) }, 'passivating actor');
    pump(cell);
  }

  const sweep = setInterval(
    () => {
      const now = Date.now();
      for (const cell of cells.values()) {
        if (
          cell.state === 'running' &&
          cell.actor &&
          cell.queue.length === 0 &&
          now - cell.lastActive >= options.idleMs &&
          cell.kind.isIdle(cell.actor.getSnapshot())
        ) {
          passivate(cell);
        }
      }
    },
    Math.min(5000, Math.max(50, options.idleMs / 4)),
  );
  sweep.unref();

  function enqueue(kindName: string, id: string, envelope: Envelope): void {
    const kind = kinds.get(kindName);
    if (!kind) {
      envelope.rejected(new Error(`unknown actor kind ${kindName}`));
      return;
    }
    if (closing) {
      envelope.rejected(new AppError('shutting_down', 'the server is shutting down'));
      return;
    }
    const cell = cells.get(`${kindName}:${id}`);
    if (cell) {
      cell.queue.push(envelope);
      pump(cell);
    } else {
      start(kind, id, [envelope]);
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
      const cell = cells.get(`${kindName}:${id}`);
      return cell?.state === 'running' ? cell.actor?.getSnapshot() : undefined;
    },

    has(kindName, id) {
      return cells.has(`${kindName}:${id}`);
    },

    counts() {
      const counts: Record<string, number> = {};
      for (const name of kinds.keys()) counts[name] = 0;
      for (const cell of cells.values()) counts[cell.kind.name] = (counts[cell.kind.name] ?? 0) + 1;
      return counts;
    },

    async stopAll(timeoutMs) {
      closing = true;
      clearInterval(sweep);
      // Actors not yet being activated have nothing to save: their messages are refused.
      for (const cell of waitingActivation.splice(0)) {
        cells.delete(cell.key);
        reject(cell.queue, new AppError('shutting_down', 'the server is shutting down'));
      }
      for (const cell of cells.values()) passivate(cell);
      const deadline = Date.now() + timeoutMs;
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
      if (cells.size)
        log.warn({ actors: [...cells.keys()].map(maskPhones) }, 'actors still running at the shutdown deadline');
    },
  };
  return host;
}
