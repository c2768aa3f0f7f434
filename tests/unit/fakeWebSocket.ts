/**
 * A scripted WebSocket for the client SDK's unit tests: each socket the SDK opens is recorded,
 * and the test plays the server (accept, frames, close) and reads what the SDK sent.
 */
import type { ClientFrame, ServerFrame } from '../../actors/miniappFrames.ts';
import type { WebSocketConstructor, WebSocketLike } from '../../src/client/ReconnectingSocket.ts';

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

export class FakeWebSocket implements WebSocketLike {
  readyState = CONNECTING;
  readonly protocol = 'archety.v1';
  /** The frames the SDK sent, parsed. */
  readonly sent: ClientFrame[] = [];
  /** What the SDK passed to `close`, if it called it. */
  closedWith: { code?: number; reason?: string } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols: string | string[] | undefined,
  ) {}

  send(data: string): void {
    if (this.readyState !== OPEN) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(data) as ClientFrame);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = CLOSING;
  }

  /** The server accepted the upgrade. */
  accept(): this {
    this.readyState = OPEN;
    this.onopen?.({});
    return this;
  }

  receive(frame: ServerFrame): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The socket ended with `code` (1006: without a close frame). */
  end(code: number, reason = ''): void {
    this.readyState = CLOSED;
    this.onclose?.({ code, reason });
  }
}

/** A WebSocket constructor for the SDK and the list of the sockets it made, newest last. */
export function fakeWebSockets(): { WebSocket: WebSocketConstructor; sockets: FakeWebSocket[] } {
  const sockets: FakeWebSocket[] = [];
  const WebSocket = class extends FakeWebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push(this);
    }
  };
  return { WebSocket, sockets };
}
