/**
 * The IPC messages between `bench/peers.ts` and its load generators (`bench/peersWorker.ts`).
 * Every request carries an `id`; the worker answers once with the same `id`
 * (`{id, ok, result}` or `{id, ok: false, error}`, as `bench/lib/processes.ts` expects).
 */
import type { OpAccount, TokenSecret } from '../lib/protocol.ts';

/** The servers compared; each has a client adapter in `bench/peers/<name>/client.ts`. */
export type PeerName = 'archety' | 'raw' | 'socketio' | 'colyseus' | 'hocuspocus';

/** One room and the users of its clients, in order (client k edits item `item-k`). */
export interface PeerRoom {
  /** Archety's session id, or the room / document name of the others. */
  id: string;
  users: string[];
}

export type PeerRequest =
  | { id: number; cmd: 'init'; workerId: number; jwt: TokenSecret }
  /**
   * Opens one client per user of every room with `peer`'s own client library, authenticated,
   * and has each insert its own budget item (unless the room's state already holds it).
   */
  | { id: number; cmd: 'connect'; peer: PeerName; baseUrl: string; rooms: PeerRoom[]; concurrency: number }
  /**
   * Closed loop (`window` edits outstanding per client) or open loop (`rate` edits/s spread
   * over this worker's clients) from `startAt` (epoch ms); counted over
   * [startAt + warmMs, startAt + warmMs + measureMs]; then up to `drainMs` for the last echoes.
   */
  | {
      id: number;
      cmd: 'load';
      mode: 'closed' | 'open';
      window: number;
      rate: number;
      startAt: number;
      warmMs: number;
      measureMs: number;
      drainMs: number;
    }
  | { id: number; cmd: 'disconnect' }
  | { id: number; cmd: 'exit' };

export interface PeerConnectResult {
  clients: number;
  failed: number;
  /** Failed connections by reason. */
  failures: Record<string, number>;
  /** The budget-item inserts of the setup. */
  setup: OpAccount;
  ms: number;
}

export interface PeerWindow {
  /** Own echoes received in the window (edits the server applied and broadcast). */
  applied: number;
  /** Broadcast frames received by all clients in the window. */
  frames: number;
  /** Edits delivered to clients in the window (a frame may carry several: Hocuspocus merges). */
  deliveries: number;
  sent: number;
  ms: number;
  /** This worker's event-loop delay p99 over the window, ms. */
  eldP99Ms: number;
  /** This worker's CPU time over the window, ms. */
  cpuMs: number;
}

export interface PeerLoadResult {
  window: PeerWindow;
  /** Every edit of the phase (warm-up, window and drain). */
  account: OpAccount;
  /** Edit → own-echo latencies (ms) of the edits sent in the window (open loop only). */
  latencies: number[];
  /** Clients whose connection closed during the phase. */
  dropped: number;
}
