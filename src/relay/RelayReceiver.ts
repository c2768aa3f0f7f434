/**
 * Which process delivers the relay's sends. On one node that is always this process (its
 * newest relay socket receives). In a cluster exactly one process delivers at a time, the one
 * with the most recently connected relay socket (`redisRelayReceiver.ts`), so that every send
 * goes to one relay socket, in outbox order, whichever process committed it.
 *
 * The `OutboxDispatcher` tells its receiver when relay sockets come and go here and when a
 * reply was committed here; the receiver tells the dispatcher when this process started or
 * stopped delivering (`changed`: everything unacknowledged is read again from the database)
 * and when replies committed elsewhere wait in the database (`rung`).
 */
export interface ReceiverEvents {
  /** This process started or stopped delivering the sends. */
  changed(): void;
  /** Replies committed on other processes wait in the outbox table: read it. */
  rung(): void;
}

export interface RelayReceiver {
  /**
   * True in a cluster: replies committed on another process reach the receiver only through
   * the database, so the dispatcher delivers only from there, in outbox order.
   */
  readonly shared: boolean;
  /** True while this process delivers the sends (to its newest relay socket). */
  receiving(): boolean;
  /** A relay socket connected here (`count` are open here now): the newest one, wherever it is, receives. */
  connected(count: number): void;
  /** A relay socket here closed; `count` are still open here. */
  disconnected(count: number): void;
  /** A reply was committed here: the receiving process is told to read the outbox. */
  ring(): void;
  listen(events: ReceiverEvents): void;
  /** Stops its timers and hands over what it holds (the cluster's receiver role). */
  close(): void;
}

/** One process alone: it always receives, and its own replies are the only ones. */
export const localRelayReceiver: RelayReceiver = {
  shared: false,
  receiving: () => true,
  connected: () => {},
  disconnected: () => {},
  ring: () => {},
  listen: () => {},
  close: () => {},
};
