/**
 * The simulator's end of `/v1/relay` (docs/protocol.md): one socket as a relay, reconnected with
 * backoff. Events go out one frame each and are answered `accepted`, `duplicate` or `error`;
 * an event still unanswered when the socket drops is sent again once it is back, which its
 * id makes safe (the server answers `duplicate` if it had stored it). Every `send` is
 * acknowledged after it was shown; redeliveries of one already shown are acknowledged again
 * but not shown twice.
 */
import WebSocket from 'ws';
import { CloseCodes } from '../../../actors/closeCodes.ts';
import type { SendFrame } from '../../../actors/conversationTypes.ts';

export type { SendFrame };

export type Answer = { type: 'accepted' | 'duplicate'; id: string } | { type: 'error'; code: string; message: string };

export type ConnectionStatus =
  | { state: 'connected'; url: string }
  | { state: 'reconnecting'; delayMs: number; reason: string }
  /** Given up: the server refused the token (`status` 401/403) or the URL (404), or the token expired. */
  | { state: 'failed'; status?: number; message: string };

export interface RelayConnectionOptions {
  /** Server base URL: `http(s)://…` or `ws(s)://…`. */
  baseUrl: string;
  /** The relay token, asked for on every (re)connect and every HTTP post. */
  token: () => Promise<string>;
  /** Whether `token` can mint a new token; if not, an expired token ends the connection. */
  renewable: boolean;
  /** A send not shown before; it is acknowledged once this returns. */
  onSend: (frame: SendFrame) => void;
  onStatus: (status: ConnectionStatus) => void;
  /** An `error` frame that answers none of our events. */
  onServerError?: (code: string, message: string) => void;
  /**
   * Events whose frame is larger are posted to `POST /v1/relay/events` instead (same inbox,
   * same idempotency key): a photo does not fit the server's frame limit (`MAX_FRAME_BYTES`,
   * 64 KiB by default), and far above it the server closes the socket. Bytes.
   */
  maxFrameBytes?: number;
}

interface Pending {
  frame: string;
  event: { id: string };
  tries: number;
  resolve: (answer: Answer) => void;
  timer?: NodeJS.Timeout;
}

interface ErrorBody {
  accepted?: string[];
  duplicates?: string[];
  rejected?: { error?: { code?: string; message?: string } }[];
  error?: { code?: string; message?: string };
}

/** Refused only for now: the event is sent again after a pause. */
const RETRYABLE = new Set(['rate_limited', 'db_unavailable', 'shutting_down']);
const MAX_TRIES = 5;
const MIN_DELAY_MS = 250;
const MAX_DELAY_MS = 10_000;
const DEFAULT_MAX_FRAME_BYTES = 60 * 1024;

const backoff = (attempt: number) => Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class RelayConnection {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly pending = new Map<string, Pending>();
  private readonly shown = new Set<string>();
  private readonly httpBase: string;
  private readonly wsUrl: string;

  constructor(private readonly o: RelayConnectionOptions) {
    this.httpBase = o.baseUrl.replace(/\/+$/, '').replace(/^ws/, 'http');
    this.wsUrl = `${this.httpBase.replace(/^http/, 'ws')}/v1/relay`;
  }

  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  start(): void {
    void this.connect();
  }

  /** Sends one event and resolves with the server's answer (waiting for a connection if needed). */
  submit(event: { id: string }): Promise<Answer> {
    if (this.closed)
      return Promise.resolve({ type: 'error', code: 'closed', message: 'the relay connection is closed' });
    const frame = JSON.stringify({ type: 'event', event });
    if (Buffer.byteLength(frame) > (this.o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES)) return this.post(event);
    return new Promise((resolve) => {
      this.pending.set(event.id, { frame, event, tries: 0, resolve });
      if (this.connected) this.ws?.send(frame);
    });
  }

  /** Stops reconnecting and closes the socket; unanswered events are answered `closed`. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.answerAll({ type: 'error', code: 'closed', message: 'the relay connection is closed' });
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    if (ws.readyState === WebSocket.CONNECTING) {
      ws.terminate();
      return;
    }
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(CloseCodes.normal);
      setTimeout(() => ws.terminate(), 1000).unref();
    });
  }

  private async connect(): Promise<void> {
    this.timer = null;
    let token: string;
    try {
      token = await this.o.token();
    } catch (err) {
      return this.fail({ message: `no token: ${(err as Error).message}` });
    }
    if (this.closed) return;
    const ws = new WebSocket(this.wsUrl, ['archety.v1', `bearer.${token}`]);
    this.ws = ws;
    let refusal: { status: number; message: string; retryAfterS: number } | null = null;
    let lastError = '';
    ws.on('open', () => {
      this.attempt = 0;
      this.o.onStatus({ state: 'connected', url: this.wsUrl });
      for (const p of this.pending.values()) ws.send(p.frame);
    });
    ws.on('message', (data) => this.onFrame(ws, data.toString()));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      const refuse = () => {
        refusal = {
          status: res.statusCode ?? 0,
          message: errorMessage(body) ?? res.statusMessage ?? '',
          retryAfterS: Number(res.headers['retry-after']) || 0,
        };
        ws.terminate();
      };
      res.on('end', refuse);
      res.on('error', refuse);
    });
    ws.on('error', (err) => {
      lastError = (err as NodeJS.ErrnoException).code ?? err.message;
    });
    ws.on('close', (code, why) => {
      if (this.ws === ws) this.ws = null;
      if (this.closed) return;
      const reason = why.toString();
      if (refusal && [401, 403, 404].includes(refusal.status)) {
        return this.fail({ status: refusal.status, message: refusal.message });
      }
      if (code === CloseCodes.policyViolation && reason === 'token expired' && !this.o.renewable) {
        return this.fail({ message: 'the token expired; pass a new one with --token' });
      }
      const delayMs = Math.max(backoff(this.attempt++), (refusal?.retryAfterS ?? 0) * 1000);
      const said = refusal
        ? `refused with HTTP ${refusal.status}${refusal.message ? `: ${refusal.message}` : ''}`
        : code === CloseCodes.abnormal
          ? lastError || 'connection lost'
          : `closed with ${code}${reason ? ` ${reason}` : ''}`;
      this.o.onStatus({ state: 'reconnecting', delayMs, reason: said });
      this.timer = setTimeout(() => void this.connect(), delayMs);
    });
  }

  private onFrame(ws: WebSocket, text: string): void {
    let f: Record<string, unknown>;
    try {
      f = JSON.parse(text);
    } catch {
      return; // the server only sends JSON; nothing to show for anything else
    }
    if (f.type === 'send' && typeof f.id === 'string') {
      if (!this.shown.has(f.id)) {
        this.shown.add(f.id);
        this.o.onSend(f as unknown as SendFrame);
      }
      ws.send(JSON.stringify({ type: 'ack', id: f.id }));
    } else if ((f.type === 'accepted' || f.type === 'duplicate') && typeof f.id === 'string') {
      this.answer(f.id, { type: f.type, id: f.id });
    } else if (f.type === 'error') {
      const code = String(f.code);
      const message = String(f.message ?? '');
      const p = typeof f.ref === 'string' ? this.pending.get(f.ref) : undefined;
      if (!p) {
        this.o.onServerError?.(code, message);
      } else if (code === 'frame_too_large') {
        // The server's frame limit is below our guess: the same event (same id) over HTTP.
        this.pending.delete(p.event.id);
        void this.post(p.event).then(p.resolve);
      } else if (RETRYABLE.has(code) && p.tries < MAX_TRIES) {
        p.timer = setTimeout(
          () => {
            if (this.connected && this.pending.get(p.event.id) === p) this.ws?.send(p.frame);
          },
          backoff(p.tries++),
        );
      } else {
        this.answer(p.event.id, { type: 'error', code, message });
      }
    }
  }

  /** `POST /v1/relay/events` with one event, its answer put the way the socket would. */
  private async post(event: { id: string }, tries = 0): Promise<Answer> {
    let res: Response;
    try {
      res = await fetch(`${this.httpBase}/v1/relay/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await this.o.token()}`, 'content-type': 'application/json' },
        body: JSON.stringify(event),
      });
    } catch (err) {
      if (tries < MAX_TRIES && !this.closed) {
        await sleep(backoff(tries));
        return this.post(event, tries + 1);
      }
      const cause = (err as { cause?: NodeJS.ErrnoException }).cause;
      return {
        type: 'error',
        code: 'unreachable',
        message: `${this.httpBase}: ${cause?.code ?? (err as Error).message}`,
      };
    }
    const body = (await res.json().catch(() => null)) as ErrorBody | null;
    if (res.status === 202 && body) {
      if (body.accepted?.includes(event.id)) return { type: 'accepted', id: event.id };
      if (body.duplicates?.includes(event.id)) return { type: 'duplicate', id: event.id };
    }
    const error = body?.error ?? body?.rejected?.[0]?.error;
    const code = error?.code ?? `http_${res.status}`;
    if (RETRYABLE.has(code) && tries < MAX_TRIES && !this.closed) {
      await sleep(Math.max(backoff(tries), (Number(res.headers.get('retry-after')) || 0) * 1000));
      return this.post(event, tries + 1);
    }
    return { type: 'error', code, message: error?.message ?? `HTTP ${res.status}` };
  }

  private answer(id: string, answer: Answer): void {
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(id);
    p.resolve(answer);
  }

  private answerAll(answer: Answer): void {
    for (const id of [...this.pending.keys()]) this.answer(id, answer);
  }

  private fail(failure: { status?: number; message: string }): void {
    this.closed = true;
    this.answerAll({ type: 'error', code: 'closed', message: failure.message });
    this.o.onStatus({ state: 'failed', ...failure });
  }
}

function errorMessage(body: string): string | undefined {
  try {
    return (JSON.parse(body) as ErrorBody).error?.message;
  } catch {
    return body.trim().slice(0, 200) || undefined;
  }
}
