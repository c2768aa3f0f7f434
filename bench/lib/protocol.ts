/**
 * The IPC messages between the benchmark's parent (`bench/miniapp.ts`) and its load-generator
 * processes (`bench/loadWorker.ts`). Every request carries an `id`; the worker answers once
 * with the same `id`.
 */

/** One room (a miniapp session) and the sockets a worker opens to it. */
export interface RoomSpec {
  sessionId: string;
  /** One user per socket, in order; socket k edits budget item `item-k`. */
  users: string[];
}

export type Target = 'archety' | 'raw';

export interface TokenSecret {
  secret: string;
  issuer: string;
  audience: string;
}

export type WorkerRequest =
  | { id: number; cmd: 'init'; workerId: number; jwt: TokenSecret }
  /** Opens one socket per user of every room and waits for each to be ready. */
  | { id: number; cmd: 'connect'; target: Target; baseUrl: string; rooms: RoomSpec[]; concurrency: number }
  /**
   * Closed loop: every socket keeps `window` ops outstanding from `startAt` (epoch ms) on;
   * counts are taken over [startAt + warmMs, startAt + warmMs + measureMs].
   */
  | { id: number; cmd: 'saturate'; startAt: number; warmMs: number; measureMs: number; window: number; drainMs: number }
  /**
   * Open loop: `rate` ops/s spread over this worker's sockets; latencies of ops sent in the
   * window. `interleave`: consecutive ops go to different rooms (socket k of every room, then
   * socket k + 1), so no room gets a burst; otherwise a room's sockets send one after another.
   */
  | {
      id: number;
      cmd: 'rate';
      startAt: number;
      warmMs: number;
      measureMs: number;
      rate: number;
      drainMs: number;
      interleave?: boolean;
    }
  | { id: number; cmd: 'disconnect' }
  /** Mints one token per socket of `rooms` (before any timing starts) for the next hold or burst. */
  | { id: number; cmd: 'prepare'; target: Target; baseUrl: string; rooms: RoomSpec[] }
  /** Opens the prepared sockets from `startAt` on, waits for their snapshots, keeps them (idle). */
  | { id: number; cmd: 'hold'; concurrency: number; startAt: number }
  /**
   * Upgrades the prepared sockets as fast as possible from `startAt` on (a minimal client: the
   * HTTP upgrade request, then the 101 status line) and keeps them until `releaseBurst`.
   */
  | { id: number; cmd: 'burst'; concurrency: number; startAt: number }
  | { id: number; cmd: 'releaseBurst' }
  | { id: number; cmd: 'release' }
  | { id: number; cmd: 'exit' };

/** Op outcomes of one phase. `sent = applied + conflict + error + inFlight` when nothing is lost. */
export interface OpAccount {
  sent: number;
  applied: number;
  conflict: number;
  error: number;
  inFlight: number;
  /** Error frames by code. */
  errorCodes: Record<string, number>;
  /** Acknowledgements for ops this worker has no record of (should stay 0). */
  unmatched: number;
}

export interface WindowCounts {
  /** Own ops acknowledged in the window. */
  applied: number;
  /** `applied` frames received by all sockets in the window (the fan-out). */
  frames: number;
  sent: number;
  ms: number;
  /** This worker's event-loop delay p99 over the window, ms. */
  eldP99Ms: number;
  /** This worker's CPU time over the window, ms. */
  cpuMs: number;
}

export interface ConnectResult {
  sockets: number;
  failed: number;
  /** Setup ops (budget items inserted). */
  setup: OpAccount;
  ms: number;
}

export interface LoadResult {
  window: WindowCounts;
  account: OpAccount;
  /** send → own `applied` latencies (ms) of ops sent in the window (open loop only). */
  latencies: number[];
  closedDuring: number;
}

export interface OpenResult {
  opened: number;
  failed: number;
  /** Refusals and errors by HTTP status or error code. */
  failures: Record<string, number>;
  /** Epoch ms of the last completed upgrade. */
  lastOpenAt: number;
  eldP99Ms: number;
  cpuMs: number;
}

export type WorkerReply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string }
  | { progress: string };
