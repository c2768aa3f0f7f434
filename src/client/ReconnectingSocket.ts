/**
 * The connection half of the client SDK: opens the socket with a fresh token each time, turns
 * its messages into frames, and when it ends decides whether to open another (exponential
 * backoff with jitter) or give up. What the frames mean is `MiniappClient`'s business; this
 * file knows nothing of snapshots or edits beyond asking whether the client ever got one.
 */
import { CloseCodes } from '../../actors/closeCodes.ts';
import type { ClientFrame, ServerFrame } from '../../actors/miniappFrames.ts';

/** The part of the WHATWG WebSocket this client uses (browsers, Node 22+, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Reconnect backoff bounds in ms. */
export interface BackoffBounds {
  minDelayMs: number;
  maxDelayMs: number;
}

export interface ReconnectingSocketOptions {
  /** The `ws:`/`wss:` URL of the endpoint. */
  url: string;
  /** The JWT, or a function returning a fresh one (called on every (re)connect). */
  token: string | (() => string | Promise<string>);
  WebSocket: WebSocketConstructor;
  /** `false` disables reconnecting. */
  reconnect: BackoffBounds | false;
}

export interface ReconnectingSocketHandlers {
  /** A new socket is about to be opened; its frames start again from a snapshot. */
  opening(): void;
  frame(frame: ServerFrame): void;
  /**
   * Whether the client got a first snapshot. Until it has, a socket that ends was refused (a
   * browser shows a 401/403/404 upgrade answer only as 1006), so trying again is pointless.
   */
  synced(): boolean;
  /**
   * The socket ended without `close()` being called: another is on its way (`reconnecting`)
   * or this was the end. Called after the next attempt is scheduled, so `close()` cancels it.
   */
  ended(code: number, reason: string, reconnecting: boolean): void;
}

const OPEN = 1;
export const DEFAULT_BACKOFF: BackoffBounds = { minDelayMs: 250, maxDelayMs: 10_000 };

/**
 * The wait in ms before reconnect attempt `attempt` (0 for the first): doubling from
 * `minDelayMs` up to `maxDelayMs`, then scaled by a random factor in [0.5, 1) so that clients
 * dropped together do not all come back at the same moment.
 */
export function backoffDelayMs(attempt: number, bounds: BackoffBounds, random: number = Math.random()): number {
  const delay = Math.min(bounds.maxDelayMs, bounds.minDelayMs * 2 ** attempt);
  return delay * (0.5 + random / 2);
}

export class ReconnectingSocket {
  private ws: WebSocketLike | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(
    private readonly options: ReconnectingSocketOptions,
    private readonly handlers: ReconnectingSocketHandlers,
  ) {}

  get isOpen(): boolean {
    return this.ws?.readyState === OPEN;
  }

  /** Sends `frame` if the socket is open; a frame that cannot go now is the caller's to resend. */
  send(frame: ClientFrame): void {
    if (this.ws?.readyState === OPEN) this.ws.send(JSON.stringify(frame));
  }

  /** The client is in step again (it got a snapshot): the next drop starts the backoff afresh. */
  resetBackoff(): void {
    this.attempt = 0;
  }

  /** Drops this socket to start again from a fresh snapshot on the next one. */
  resync(reason: 'gap' | 'diverged' | 'unanswered'): void {
    this.ws?.close(CloseCodes.resync, reason);
  }

  /** Stops for good: no reconnect, and the socket is closed normally. */
  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close(CloseCodes.normal, 'bye');
  }

  async open(): Promise<void> {
    const { token } = this.options;
    const jwt = typeof token === 'function' ? await token() : token;
    if (this.stopped) return;
    const ws = new this.options.WebSocket(this.options.url, ['archety.v1', `bearer.${jwt}`]);
    this.ws = ws;
    this.handlers.opening();
    ws.onmessage = (ev) => {
      let frame: ServerFrame;
      try {
        frame = JSON.parse(String(ev.data)) as ServerFrame;
      } catch {
        return; // not ours to crash on: the server only sends JSON
      }
      this.handlers.frame(frame);
    };
    ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
    // An error is always followed by a close, handled there; `ws` throws on one nobody listens to.
    ws.onerror = () => {};
  }

  private onClose(code: number, reason: string): void {
    this.ws = null;
    if (this.stopped) return;
    const { reconnect, token } = this.options;
    // An expired token can only come back if the caller gave us a way to get a new one.
    const hopeless =
      reconnect === false ||
      !this.handlers.synced() ||
      (code === CloseCodes.policyViolation && typeof token === 'string');
    if (hopeless) {
      this.stopped = true;
      this.handlers.ended(code, reason, false);
      return;
    }
    this.timer = setTimeout(() => void this.open(), backoffDelayMs(this.attempt++, reconnect));
    this.handlers.ended(code, reason, true);
  }
}
