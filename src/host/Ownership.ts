/**
 * The seam where cluster mode plugs in: who may run an actor. A single node always may
 * (`localOwnership.ts`); cluster mode answers with a Redlock lease (`src/cluster/`). Ownership
 * only decides where an actor runs; what protects the data is the epoch fence
 * (`actor_leases`), bumped right after `acquire` on every activation, so a process that lost
 * its lease cannot write.
 *
 * The host calls, per actor key (`<kind>:<id>`):
 * - `acquire` first thing in an activation (`activateActor.ts`); false refuses the activation
 *   with `session_unavailable`, and the messages waiting for it are rejected.
 * - `release` once the actor stopped for good (`createActorHost.ts`), when the kind found no
 *   such actor, or when the activation failed after `acquire` (the epoch bump or the kind's
 *   `activate` threw; `activateActor.ts`). A failed release is only logged: a lease-based
 *   `Ownership` must still let such a lease expire.
 * An `Ownership` that can lose a lease (it could not extend it in time) tells the host through
 * `onLost`: the host stops that actor at once, without saving, since another process may
 * already run it.
 */
export interface Ownership {
  /** Resolves true when this process may run the actor `key` now. */
  acquire(key: string): Promise<boolean>;
  /** Gives up the actor `key`; the host calls it at most once per successful `acquire`. */
  release(key: string): Promise<void>;
  /** The process (`src/cluster/processId.ts`) that holds `key` now, or null when none does. */
  ownerOf(key: string): Promise<string | null>;
  /**
   * `listener` hears of every key whose lease this process lost: once per lease, never after
   * `release(key)` was called for it.
   */
  onLost(listener: (key: string) => void): void;
  /** Stops extending leases (after the host released what it held). */
  close(): Promise<void>;
}
