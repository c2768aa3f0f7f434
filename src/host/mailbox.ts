/**
 * One cell per actor key: its lifecycle state and its mailbox. Messages for an actor queue in
 * its cell and are delivered one at a time while the actor is not tagged `busy`; an actor
 * waiting on I/O that must not interleave (a photo being analysed, older ops being read) tags
 * its state `busy` and the queue waits. Passivation is a message like any other: it waits for
 * the actor to finish what it is doing. Events an actor's own services send back to it (a
 * commit's outcome) bypass the mailbox.
 */
import type { AnyActorRef, EventObject } from 'xstate';
import { type RequestContext, withContext } from '../observability/context.ts';
import { type Logger, maskPhones } from '../observability/logger.ts';
import { type ActorKind, actorKey } from './ActorKind.ts';

export interface Envelope {
  event: EventObject;
  /** The correlation context of the sender, restored while the actor handles the event. */
  context: RequestContext | undefined;
  delivered?: () => void;
  rejected: (err: Error) => void;
}

export interface Cell {
  kind: ActorKind;
  id: string;
  key: string;
  /**
   * `fenced`: its lease was lost (`Ownership.onLost`); the host dropped it at once and nothing
   * more is delivered to it or saved by it.
   */
  state: 'activating' | 'running' | 'stopping' | 'fenced';
  actor?: AnyActorRef;
  /**
   * This cell holds the actor's ownership: from a successful `acquire` until it is released,
   * or lost (only then does a lost lease fence the cell).
   */
  owned: boolean;
  /** The epoch this activation's writes carry; 0 until ownership was taken. */
  epoch: number;
  queue: Envelope[];
  /** When the last message was handed over (ms since the epoch), for idle passivation. */
  lastActive: number;
  /** A delivery is scheduled. */
  pumping: boolean;
  passivateSent: boolean;
}

/** A cell waiting for its activation, holding `queue` (messages that arrived meanwhile). */
export function createCell(kind: ActorKind, id: string, queue: Envelope[]): Cell {
  return {
    kind,
    id,
    key: actorKey(kind.name, id),
    state: 'activating',
    owned: false,
    epoch: 0,
    queue,
    lastActive: Date.now(),
    pumping: false,
    passivateSent: false,
  };
}

/** Refuses every queued message with `err`, emptying the queue. */
export function rejectQueue(queue: Envelope[], err: Error): void {
  for (const e of queue.splice(0)) e.rejected(err);
}

/**
 * Delivers queued messages, in a microtask: never from inside the actor's own processing
 * (a snapshot listener runs there), where a send would only be queued by XState, the actor
 * would still look idle, and the next message would arrive in a state that drops it.
 */
export function pump(cell: Cell): void {
  if (cell.pumping) return;
  cell.pumping = true;
  queueMicrotask(() => {
    cell.pumping = false;
    deliver(cell);
  });
}

/** Asks a running actor to passivate, once its mailbox lets the passivate event through. */
export function passivate(cell: Cell, log: Logger): void {
  if (cell.state !== 'running' || !cell.actor) return;
  cell.state = 'stopping';
  log.debug({ actor: maskPhones(cell.key) }, 'passivating actor');
  pump(cell);
}

function busy(actor: AnyActorRef): boolean {
  const snapshot = actor.getSnapshot();
  return snapshot.status !== 'active' || snapshot.hasTag('busy');
}

function deliver(cell: Cell): void {
  const actor = cell.actor;
  if (cell.state === 'activating' || !actor) return;
  while (cell.state === 'running' && cell.queue.length && !busy(actor)) {
    const envelope = cell.queue.shift() as Envelope;
    cell.lastActive = Date.now();
    // What the actor does for this event while it handles it (its actions, their log lines)
    // carries the sender's correlation id, not that of whatever woke the mailbox.
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
