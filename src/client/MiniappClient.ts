/**
 * The typed client SDK for `/v1/miniapp/:sessionId` (docs/protocol.md). Works in the browser and
 * in Node (pass a WebSocket implementation such as `ws` where there is no global one).
 *
 * It keeps two states: `confirmed` (the server's, at `version`, built only from snapshots and
 * `applied` frames, so it always equals the server's state at that version) and `view`
 * (confirmed plus this client's pending edits, for the UI). It reconnects with backoff and
 * resumes: after a reconnect it learns from the `applied` history which pending edits landed,
 * re-checks the others against what others did meanwhile (the same field-level rule the
 * server applies), resends those that do not clash and reports the rest as conflicts, with
 * the edit kept so the person can re-apply it. No edit is dropped silently.
 *
 * An edit's `baseVersion` is the version the person saw when they began it (`apply`'s
 * `baseVersion` option: the page passes the version at a field's first keystroke), not the
 * version when it is sent: otherwise an edit typed while someone else changed the same field
 * would silently overwrite theirs. A `conflict` lists only the ops that clash with the edit
 * (overlapping paths, not sent by this client), whatever else the server's frame holds.
 *
 * This class composes the parts: `ReconnectingSocket.ts` (the connection and its backoff),
 * `PendingEdits.ts` (the edits' bookkeeping and the re-check after a reconnect) and
 * `Emitter.ts` (the events).
 */
import { miniapps } from '../../actors/apps/index.ts';
import type { AppliedOp, ServerFrame } from '../../actors/miniappFrames.ts';
import { applyOp, type Op } from '../../actors/ops.ts';
import type { Schema } from '../../actors/schema.ts';
import { Emitter, type Listener } from './Emitter.ts';
import { applyPending, type ConflictEvent, type PendingEdit, PendingEdits } from './PendingEdits.ts';
import {
  type BackoffBounds,
  DEFAULT_BACKOFF,
  ReconnectingSocket,
  type WebSocketConstructor,
  type WebSocketLike,
} from './ReconnectingSocket.ts';

export type { AppliedOp, ConflictEvent, Op, PendingEdit, ServerFrame, WebSocketConstructor, WebSocketLike };

export interface MiniappClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:8080` or `wss://example.com`. */
  baseUrl: string;
  sessionId: string;
  /** The JWT, or a function returning a fresh one (called on every (re)connect). */
  token: string | (() => string | Promise<string>);
  /** The app's name (its schema checks edits locally and drives conflict checks). */
  app?: string;
  WebSocket?: WebSocketConstructor;
  /** Reconnect backoff bounds in ms; `false` disables reconnecting. */
  reconnect?: BackoffBounds | false;
  /**
   * An edit sent and not answered within this (ms) makes the client resynchronise: it
   * reconnects and resumes, learning the edit's fate or sending it again. An answer can be
   * lost when the server process that took it died before answering. Default 10,000.
   */
  answerTimeoutMs?: number;
}

export type ClientStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface MiniappClientEvents {
  /** The view changed (snapshot, applied op, local edit, conflict). */
  change: { view: unknown; version: number };
  applied: AppliedOp;
  conflict: ConflictEvent;
  /** An `error` frame; `edit` is set when it refused one of this client's edits. */
  error: { code: string; message: string; edit?: PendingEdit };
  presence: { online: string[] };
  status: { status: ClientStatus; code?: number; reason?: string };
}

type SnapshotFrame = Extract<ServerFrame, { type: 'snapshot' }>;

function randomId(): string {
  const c = globalThis.crypto;
  return c?.randomUUID ? c.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** How long a sent edit may go unanswered before the client resynchronises (ms). */
const ANSWER_TIMEOUT_MS = 10_000;

export class MiniappClient {
  /** The server's state at `version`. */
  confirmed: unknown = null;
  version = -1;
  /** `confirmed` with this client's pending edits applied. */
  view: unknown = null;
  participants: string[] = [];
  online: string[] = [];
  status: ClientStatus = 'connecting';
  /** Edits sent (or waiting to be sent) and not yet answered, in order. */
  readonly pending: PendingEdit[];

  private readonly schema: Schema | undefined;
  private readonly edits: PendingEdits;
  private readonly events = new Emitter<MiniappClientEvents>();
  private readonly socket: ReconnectingSocket;
  /** Whether the current socket has sent its snapshot yet. */
  private hadSnapshot = false;
  /** When each pending edit was last sent (Date.now()), for the answer timeout. */
  private readonly sentAt = new Map<string, number>();
  private readonly watchdog: ReturnType<typeof setInterval>;

  constructor(options: MiniappClientOptions) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package)');
    this.schema = miniapps.get(options.app ?? 'trip-planner')?.schema;
    this.edits = new PendingEdits(this.schema);
    this.pending = this.edits.edits;
    const base = options.baseUrl.replace(/^http/, 'ws').replace(/\/$/, '');
    this.socket = new ReconnectingSocket(
      {
        url: `${base}/v1/miniapp/${encodeURIComponent(options.sessionId)}`,
        token: options.token,
        WebSocket: WS,
        reconnect: options.reconnect ?? DEFAULT_BACKOFF,
      },
      {
        opening: () => {
          this.hadSnapshot = false;
        },
        frame: (frame) => this.onFrame(frame),
        synced: () => this.version >= 0,
        ended: (code, reason, reconnecting) => {
          this.edits.socketClosed();
          if (!reconnecting) clearInterval(this.watchdog);
          this.setStatus(reconnecting ? 'reconnecting' : 'closed', code, reason);
        },
      },
    );
    void this.socket.open();
    const answerTimeoutMs = options.answerTimeoutMs ?? ANSWER_TIMEOUT_MS;
    this.watchdog = setInterval(() => this.checkAnswers(answerTimeoutMs), Math.max(50, answerTimeoutMs / 4));
    (this.watchdog as { unref?: () => void }).unref?.();
  }

  /** Resynchronises when a pending edit went unanswered for `timeoutMs` on an open socket. */
  private checkAnswers(timeoutMs: number): void {
    if (!this.ready()) return;
    const now = Date.now();
    const pending = new Set(this.pending.map((p) => p.opId));
    for (const [opId, at] of this.sentAt) {
      if (!pending.has(opId)) this.sentAt.delete(opId);
      else if (now - at >= timeoutMs) {
        this.sentAt.clear();
        this.socket.resync('unanswered');
        return;
      }
    }
  }

  on<K extends keyof MiniappClientEvents>(type: K, listener: Listener<MiniappClientEvents[K]>): () => void {
    return this.events.on(type, listener);
  }

  /**
   * Applies an edit locally at once and sends it. `baseVersion` is the version the edit was
   * begun from (default: the current one); an older one lets the server answer `conflict`
   * when someone else changed the same field since. Throws when the edit is invalid for the
   * app's schema against the current view, or the base is not a version this client has seen
   * (nothing is sent then).
   */
  apply(op: Op, options: { baseVersion?: number } = {}): PendingEdit {
    if (this.version < 0) throw new Error('not connected yet: wait for the first snapshot');
    const baseVersion = options.baseVersion ?? this.version;
    if (!Number.isInteger(baseVersion) || baseVersion < 0 || baseVersion > this.version) {
      throw new Error(`baseVersion ${baseVersion} is not a version between 0 and ${this.version}`);
    }
    if (this.schema) {
      const local = applyOp(this.schema, this.view, op);
      if (!local.ok) throw new Error(local.message);
    }
    const edit: PendingEdit = { opId: randomId(), op, baseVersion };
    this.edits.add(edit);
    this.recompute();
    if (this.ready()) this.send(edit);
    return edit;
  }

  /** Resolves once every pending edit has been answered (applied, conflict or error). */
  settled(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) return resolve();
      const t = setTimeout(() => {
        off();
        reject(new Error(`${this.pending.length} edits still pending`));
      }, timeoutMs);
      const check = () => {
        if (this.pending.length === 0) {
          clearTimeout(t);
          off();
          resolve();
        }
      };
      const offs = [this.on('applied', check), this.on('conflict', check), this.on('error', check)];
      const off = () => {
        for (const o of offs) o();
      };
    });
  }

  close(): void {
    clearInterval(this.watchdog);
    this.socket.close();
    this.setStatus('closed');
  }

  /** Edits go out only once this socket's snapshot arrived and no resume is under way. */
  private ready(): boolean {
    return this.socket.isOpen && this.hadSnapshot && !this.edits.resuming;
  }

  private send(edit: PendingEdit): void {
    this.sentAt.set(edit.opId, Date.now());
    this.socket.send({ type: 'op', opId: edit.opId, baseVersion: edit.baseVersion, op: edit.op });
  }

  private setStatus(status: ClientStatus, code?: number, reason?: string): void {
    this.status = status;
    this.events.emit('status', { status, code, reason });
  }

  private onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case 'snapshot':
        this.onSnapshot(frame);
        return;
      case 'applied':
        this.onApplied(frame);
        return;
      case 'conflict': {
        const conflict = this.edits.conflict(frame.opId, frame.ops, this.version);
        if (!conflict) return;
        if ('retry' in conflict) {
          // It clashed only with this client's own earlier edits: sent again on top of them.
          if (this.ready()) this.send(conflict.retry);
          return;
        }
        this.recompute();
        this.events.emit('conflict', conflict);
        return;
      }
      case 'presence':
        this.online = frame.online;
        this.events.emit('presence', { online: frame.online });
        return;
      case 'error':
        this.onError(frame);
        return;
    }
  }

  private onSnapshot(frame: SnapshotFrame): void {
    const previous = this.version;
    this.takeSnapshot(frame);
    if (this.hadSnapshot) {
      // The server answered a resume with a snapshot: the history is gone, so the fate of
      // the pending edits cannot be learned. They are reported, never silently dropped.
      const lost = this.edits.lose();
      this.recompute();
      for (const conflict of lost) this.events.emit('conflict', conflict);
      return;
    }
    this.hadSnapshot = true;
    this.socket.resetBackoff();
    this.setStatus('open');
    if (this.edits.startResume(previous, frame.version)) {
      // Learn what happened while we were away (and which pending edits landed) first.
      this.socket.send({ type: 'resume', since: previous });
      this.recompute();
    } else if (this.pending.length) {
      this.rebase();
    } else {
      this.recompute();
    }
  }

  private takeSnapshot(frame: SnapshotFrame): void {
    // After a reconnect the kept history stays: a resume's history continues it.
    this.edits.snapshot(frame.version);
    this.confirmed = frame.state;
    this.version = frame.version;
    this.participants = frame.participants;
    this.online = frame.online;
  }

  private onApplied(frame: AppliedOp & { type: 'applied' }): void {
    const applied: AppliedOp = { opId: frame.opId, by: frame.by, version: frame.version, op: frame.op };
    if (frame.version <= this.version) {
      // History (a resume's answer): already in our state; it tells us which edits landed.
      if (this.edits.historyOp(applied)) this.rebase();
      // Or the answer to an edit sent again that had landed before: it is done.
      else if (this.edits.answeredAgain(applied)) this.recompute();
      return;
    }
    if (frame.version !== this.version + 1) {
      // A gap should never happen; resynchronise from a fresh snapshot.
      this.socket.resync('gap');
      return;
    }
    if (this.schema) {
      const next = applyOp(this.schema, this.confirmed, frame.op);
      if (!next.ok) {
        this.socket.resync('diverged');
        return;
      }
      this.confirmed = next.state;
    }
    this.version = frame.version;
    this.edits.landed(applied);
    this.recompute();
    this.events.emit('applied', applied);
  }

  private onError(frame: Extract<ServerFrame, { type: 'error' }>): void {
    const refusal = this.edits.refused(frame.ref, frame.code);
    if ('retry' in refusal) {
      const { retry: edit, delayMs } = refusal;
      setTimeout(() => {
        if (this.ready() && this.edits.has(edit)) this.send(edit);
      }, delayMs);
      return;
    }
    if (refusal.edit) this.recompute();
    this.events.emit('error', { code: frame.code, message: frame.message, edit: refusal.edit });
  }

  /**
   * After a reconnect: the pending edits are re-checked (`PendingEdits.rebase`), the kept ones
   * sent again, and the clashing ones reported once the view no longer holds them. Sent before
   * the conflicts are emitted, so an edit a listener re-applies goes out once.
   */
  private rebase(): void {
    const conflicts = this.edits.rebase(this.version);
    for (const edit of this.pending) this.send(edit);
    this.recompute();
    for (const conflict of conflicts) this.events.emit('conflict', conflict);
  }

  /** view = confirmed + pending edits that still apply. */
  private recompute(): void {
    this.view = applyPending(this.schema, this.confirmed, this.pending);
    this.events.emit('change', { view: this.view, version: this.version });
  }
}
