/**
 * The cluster's doorbell: messages between processes over Redis pub/sub. It is never the
 * truth: what must not be lost is in PostgreSQL (inbox, outbox, `miniapp_ops`), and a lost bus
 * message delays work (a sweep or a client's resume finds it), never loses it.
 *
 * Two kinds of channel, both under `REDIS_PREFIX`:
 * - one per process (`send`/`onMessage`), named by its process id (`processId.ts`): work for an
 *   actor it owns, frames for connections it holds;
 * - topics (`publish`/`subscribe`), e.g. one per miniapp session, which a process subscribes
 *   to while it holds sockets of that session.
 * Messages from one process arrive in the order it sent them, across its channels and topics
 * alike (one publishing connection, one subscribing connection per process).
 */
export type BusHandler = (message: unknown, from: string) => void;

export interface Bus {
  /** This process's id on the bus. */
  readonly self: string;
  /**
   * Sends `message` (JSON; a value that is not throws `TypeError`) to the process `to`; lost if
   * nobody listens there, or while this process is disconnected from Redis (never queued).
   * `unheard` is called when it certainly reached nobody (no process listens on that channel,
   * e.g. it died or shut down; or Redis is away).
   */
  send(to: string, message: unknown, unheard?: () => void): void;
  /** Hears every message sent to this process. */
  onMessage(handler: BusHandler): void;
  /** Sends `message` to every process subscribed to `topic`, this one included if it is. */
  publish(topic: string, message: unknown): void;
  /**
   * Counted: each `subscribe` needs its `unsubscribe` (with the same handler). Resolves once
   * Redis confirmed it; a rejection still leaves the subscription standing (it is made again
   * on reconnect), so it still needs its `unsubscribe`.
   */
  subscribe(topic: string, handler: BusHandler): Promise<void>;
  unsubscribe(topic: string, handler: BusHandler): void;
  /**
   * Hears of every reconnection to Redis, once both connections and every subscription are
   * back: messages sent or published meanwhile, either way, may be lost.
   */
  onReconnect(handler: () => void): void;
  /** Which of `processes` listen on the bus now (a process that died or shut down does not). */
  present(processes: string[]): Promise<Set<string>>;
  /** True while connected to Redis (for `/ready`). */
  connected(): boolean;
  close(): Promise<void>;
}
