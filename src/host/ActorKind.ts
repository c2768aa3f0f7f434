/**
 * How a family of actors (miniapp sessions, conversations) plugs into the host. The host knows
 * nothing else about them: it builds, feeds and passivates actors only through this contract.
 */
import type { AnyActorRef, EventObject, SnapshotFrom } from 'xstate';

export interface ActorKind<TEvent extends EventObject = EventObject> {
  /** Actor keys are `<name>:<id>` (`actorKey`). */
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

/**
 * The key of an actor in the host, in ownership and in `actor_leases`: one spelling, so a lease
 * and a live actor always name the same thing.
 */
export function actorKey(kindName: string, id: string): string {
  return `${kindName}:${id}`;
}
