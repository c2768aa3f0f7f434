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
 */
import { miniapps } from '../../actors/apps/index.ts';
import type { AppliedOp, ClientFrame, ServerFrame } from '../../actors/miniappFrames.ts';
import { applyOp, claimedPath, type Op, overlaps } from '../../actors/ops.ts';
import type { Schema } from '../../actors/schema.ts';

export type { AppliedOp, Op, ServerFrame };

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
  reconnect?: { minDelayMs: number; maxDelayMs: number } | false;
}

export interface PendingEdit {
  opId: string;
  op: Op;
  baseVersion: number;
}

export interface ConflictEvent {
  /** The edit that was not applied; re-apply it with `apply(edit.op)` if still wanted. */
  edit: PendingEdit;
  /**
   * The ops that touched the same fields since the edit's base version and were not sent by
   * this client (an op `by` this client's user came from another connection of theirs).
   */
  ops: AppliedOp[];
  /** True when the edit's fate could not be learned (its history is gone). */
  unconfirmed?: boolean;
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

type Listener<K extends keyof MiniappClientEvents> = (event: MiniappClientEvents[K]) => void;

const OPEN = 1;
/** Error codes that refuse an edit only for now: it stays pending and is sent again. */
const RETRYABLE = new Set(['rate_limited', 'db_unavailable', 'session_unavailable', 'shutting_down']);
const RETRY_DELAY_MS = 500;
/** After this many transient refusals an edit is reported as refused. */
const MAX_RETRIES = 5;
/**
 * Applied ops (and this client's own op ids) kept to check edits against after a reconnect;
 * the server keeps at least as many versions (its `MAX_STALE_VERSIONS`).
 */
const HISTORY = 1000;

function randomId(): string {
  const c = globalThis.crypto;
  return c?.randomUUID ? c.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

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
  readonly pending: PendingEdit[] = [];

  private ws: WebSocketLike | null = null;
  private readonly schema: Schema | undefined;
  private readonly listeners = new Map<keyof MiniappClientEvents, Set<Listener<never>>>();
  private readonly WS: WebSocketConstructor;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  /** Set after a reconnect until the history (since, upTo] has arrived. */
  private resuming: { since: number; upTo: number } | null = null;
  /** The last `HISTORY` applied ops known to this client, without a gap, all after version `recentFrom`. */
  private readonly recent: AppliedOp[] = [];
  private recentFrom = -1;
  /** Transient refusals per pending edit. */
  private readonly retries = new Map<string, number>();
  /** Ids of the last `HISTORY` edits this client sent (they never clash with its later edits). */
  private readonly sent = new Set<string>();
  private hadSnapshot = false;

  constructor(private readonly options: MiniappClientOptions) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package)');
    this.WS = WS;
    this.schema = miniapps.get(options.app ?? 'trip-planner')?.schema;
    void this.connect();
  }

  on<K extends keyof MiniappClientEvents>(type: K, listener: Listener<K>): () => void {
    const set = this.listeners.get(type) ?? new Set<Listener<never>>();
    this.listeners.set(type, set);
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
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
    this.pending.push(edit);
    this.markSent(edit.opId);
    this.recompute();
    if (this.ready()) this.sendFrame({ type: 'op', opId: edit.opId, baseVersion: edit.baseVersion, op });
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
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close(1000, 'bye');
    this.setStatus('closed');
  }

  private ready(): boolean {
    return this.ws?.readyState === OPEN && this.hadSnapshot && this.resuming === null;
  }

  private emit<K extends keyof MiniappClientEvents>(type: K, event: MiniappClientEvents[K]): void {
    for (const l of this.listeners.get(type) ?? []) (l as Listener<K>)(event);
  }

  private setStatus(status: ClientStatus, code?: number, reason?: string): void {
    this.status = status;
    this.emit('status', { status, code, reason });
  }

  private async connect(): Promise<void> {
    const token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
    if (this.stopped) return;
    const base = this.options.baseUrl.replace(/^http/, 'ws').replace(/\/$/, '');
    const ws = new this.WS(`${base}/v1/miniapp/${encodeURIComponent(this.options.sessionId)}`, [
      'archety.v1',
      `bearer.${token}`,
    ]);
    this.ws = ws;
    this.hadSnapshot = false;
    ws.onmessage = (ev) => {
      let frame: ServerFrame;
      try {
        frame = JSON.parse(String(ev.data)) as ServerFrame;
      } catch {
        return; // not ours to crash on: the server only sends JSON
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
    ws.onerror = () => {};
  }

  private onClose(code: number, reason: string): void {
    this.ws = null;
    this.resuming = null;
    if (this.stopped) return;
    const reconnect = this.options.reconnect ?? { minDelayMs: 250, maxDelayMs: 10_000 };
    // An expired token can only come back if the caller gives us a way to get a new one; a
    // socket that never opened was refused (401/403/404 look like 1006 to a browser).
    const hopeless =
      reconnect === false || this.version < 0 || (code === 1008 && typeof this.options.token === 'string');
    if (hopeless) {
      this.stopped = true;
      this.setStatus('closed', code, reason);
      return;
    }
    const delay = Math.min(reconnect.maxDelayMs, reconnect.minDelayMs * 2 ** this.attempt++);
    this.timer = setTimeout(() => void this.connect(), delay * (0.5 + Math.random() / 2));
    this.setStatus('reconnecting', code, reason);
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
        const i = this.pending.findIndex((p) => p.opId === frame.opId);
        if (i < 0) return;
        const [edit] = this.pending.splice(i, 1);
        this.recompute();
        // The server's frame lists every op since the base (this socket's own included).
        this.emit('conflict', { edit, ops: this.clashesWith(edit, frame.ops) });
        return;
      }
      case 'presence':
        this.online = frame.online;
        this.emit('presence', { online: frame.online });
        return;
      case 'error': {
        const i = frame.ref === undefined ? -1 : this.pending.findIndex((p) => p.opId === frame.ref);
        const tries = i >= 0 ? (this.retries.get(this.pending[i].opId) ?? 0) : 0;
        if (i >= 0 && RETRYABLE.has(frame.code) && tries < MAX_RETRIES) {
          // Not refused, only not now: keep the edit and send it again, backing off.
          const edit = this.pending[i];
          this.retries.set(edit.opId, tries + 1);
          setTimeout(
            () => {
              if (this.ready() && this.pending.includes(edit)) {
                this.sendFrame({ type: 'op', opId: edit.opId, baseVersion: edit.baseVersion, op: edit.op });
              }
            },
            RETRY_DELAY_MS * 2 ** tries,
          );
          return;
        }
        const edit = i >= 0 ? this.pending.splice(i, 1)[0] : undefined;
        if (edit) this.recompute();
        this.emit('error', { code: frame.code, message: frame.message, edit });
        return;
      }
    }
  }

  private onSnapshot(frame: Extract<ServerFrame, { type: 'snapshot' }>): void {
    const previous = this.version;
    const first = !this.hadSnapshot;
    if (!first) {
      // The server answered a resume with a snapshot: the history is gone, so the fate of
      // the pending edits cannot be learned. They are reported, never silently dropped.
      this.takeSnapshot(frame);
      const lost = this.pending.splice(0);
      this.resuming = null;
      this.recompute();
      for (const edit of lost) this.emit('conflict', { edit, ops: [], unconfirmed: true });
      return;
    }
    this.takeSnapshot(frame);
    this.hadSnapshot = true;
    this.attempt = 0;
    this.setStatus('open');
    if (previous >= 0 && this.pending.length && previous < frame.version) {
      // Learn what happened while we were away (and which pending edits landed) first.
      this.resuming = { since: previous, upTo: frame.version };
      this.sendFrame({ type: 'resume', since: previous });
    } else if (this.pending.length) {
      this.rebasePending();
    }
    this.recompute();
  }

  private takeSnapshot(frame: Extract<ServerFrame, { type: 'snapshot' }>): void {
    // After a reconnect `recent` stays: a resume's history continues it (`remember`).
    if (this.recent.length === 0) this.recentFrom = frame.version;
    this.confirmed = frame.state;
    this.version = frame.version;
    this.participants = frame.participants;
    this.online = frame.online;
  }

  private onApplied(frame: AppliedOp & { type: 'applied' }): void {
    const applied: AppliedOp = { opId: frame.opId, by: frame.by, version: frame.version, op: frame.op };
    if (frame.version <= this.version) {
      // History (a resume's answer): already in our state; it tells us which edits landed.
      if (this.resuming && frame.version > this.resuming.since) {
        this.remember(applied);
        if (frame.version >= this.resuming.upTo) {
          this.resuming = null;
          this.rebasePending();
          this.recompute();
        }
      }
      return;
    }
    if (frame.version !== this.version + 1) {
      // A gap should never happen; resynchronise from a fresh snapshot.
      this.ws?.close(4000, 'gap');
      return;
    }
    if (this.schema) {
      const next = applyOp(this.schema, this.confirmed, frame.op);
      if (!next.ok) {
        this.ws?.close(4000, 'diverged');
        return;
      }
      this.confirmed = next.state;
    }
    this.version = frame.version;
    this.remember(applied);
    const mine = this.pending.findIndex((p) => p.opId === frame.opId);
    if (mine >= 0) this.pending.splice(mine, 1);
    this.recompute();
    this.emit('applied', applied);
  }

  /**
   * Keeps the last applied ops: after a reconnect, pending edits (whose base may be older than
   * when they were sent) are checked against them. A resume's history fills the gap the
   * snapshot left (`recentFrom`), in order.
   */
  private remember(op: AppliedOp): void {
    if (this.pending.length === 0) this.retries.clear();
    const last = this.recent.length ? this.recent[this.recent.length - 1].version : this.recentFrom;
    if (op.version <= last) return;
    if (op.version !== last + 1) {
      this.recent.length = 0;
      this.recentFrom = op.version - 1;
    }
    this.recent.push(op);
    if (this.recent.length > HISTORY) this.recentFrom = (this.recent.shift() as AppliedOp).version;
  }

  private markSent(opId: string): void {
    this.sent.add(opId);
    if (this.sent.size > HISTORY) this.sent.delete(this.sent.values().next().value as string);
  }

  /** The ops of `ops` after the edit's base that touched its fields and were not sent by this client. */
  private clashesWith(edit: PendingEdit, ops: AppliedOp[]): AppliedOp[] {
    const claimed = this.schema ? claimedPath(this.schema, edit.op) : undefined;
    return ops.filter(
      (h) =>
        h.version > edit.baseVersion &&
        !this.sent.has(h.opId) &&
        (!this.schema || !claimed || overlaps(claimedPath(this.schema, h.op), claimed)),
    );
  }

  /**
   * After a reconnect: pending edits that landed are dropped; the others are checked against
   * what others did since their base version (this client's own edits never clash, as on one
   * socket) and resent on the current version, or reported as conflicts.
   */
  private rebasePending(): void {
    const landed = new Set(this.recent.map((h) => h.opId));
    const kept: PendingEdit[] = [];
    const last = this.recent.length ? this.recent[this.recent.length - 1].version : this.recentFrom;
    const keptFrom = last === this.version ? this.recentFrom : Number.POSITIVE_INFINITY;
    for (const edit of this.pending) {
      if (landed.has(edit.opId)) continue;
      if (edit.baseVersion < keptFrom) {
        // Older than what this client kept: the server checks it against its own history.
        kept.push(edit);
        continue;
      }
      const clash = this.clashesWith(edit, this.recent);
      if (clash.length) this.emit('conflict', { edit, ops: clash });
      else kept.push({ ...edit, baseVersion: this.version });
    }
    this.pending.splice(0, this.pending.length, ...kept);
    this.resendPending();
  }

  private resendPending(): void {
    for (const e of this.pending) this.sendFrame({ type: 'op', opId: e.opId, baseVersion: e.baseVersion, op: e.op });
  }

  private sendFrame(frame: ClientFrame): void {
    if (this.ws?.readyState === OPEN) this.ws.send(JSON.stringify(frame));
  }

  /** view = confirmed + pending edits that still apply. */
  private recompute(): void {
    let view = this.confirmed;
    if (this.schema) {
      for (const p of this.pending) {
        const r = applyOp(this.schema, view, p.op);
        if (r.ok) view = r.state;
      }
    }
    this.view = view;
    this.emit('change', { view, version: this.version });
  }
}
