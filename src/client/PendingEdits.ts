/**
 * The client SDK's bookkeeping of its own edits, without sockets or timers: which edits are
 * still unanswered, which ids this client sent, the recent applied ops, how often an edit was
 * refused only for now, and whether a resume's history is still coming in.
 *
 * Its one subtle job is the re-check after a reconnect: pending edits that landed meanwhile
 * are dropped, the others are checked against what others did since their base version (the
 * same field-level rule the server applies; this client's own edits never clash, as on one
 * socket) and rebased onto the current version, or reported as conflicts with the edit kept so
 * the person can re-apply it. No edit is dropped silently.
 */
import type { AppliedOp } from '../../actors/miniappFrames.ts';
import { applyOp, claimedPath, type Op, overlaps } from '../../actors/ops.ts';
import type { Schema } from '../../actors/schema.ts';
import { AppliedHistory } from './AppliedHistory.ts';

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

/** What an `error` frame about an edit means for it. */
export type Refusal =
  /** Refused only for now: the edit stays pending; send it again after `delayMs`. */
  | { retry: PendingEdit; delayMs: number }
  /** Refused for good (`edit` removed from the pending ones), or the error was about no pending edit. */
  | { edit?: PendingEdit };

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

/**
 * The ops of `ops` after the edit's base that touched its fields and were not sent by this
 * client (`sent`). Without a schema every such op counts as touching them.
 */
export function clashingOps(
  schema: Schema | undefined,
  edit: PendingEdit,
  ops: readonly AppliedOp[],
  sent: ReadonlySet<string>,
): AppliedOp[] {
  const claimed = schema ? claimedPath(schema, edit.op) : undefined;
  return ops.filter(
    (h) =>
      h.version > edit.baseVersion &&
      !sent.has(h.opId) &&
      (!schema || !claimed || overlaps(claimedPath(schema, h.op), claimed)),
  );
}

/**
 * After a reconnect, at `version`: pending edits found in `history` landed and are dropped;
 * one based before what `history` covers is kept as it is (the server checks it against its
 * own history); the others clash with an op of `history` (a conflict) or are rebased onto
 * `version`. `kept` stays in the pending edits' order.
 */
export function rebasePending(
  schema: Schema | undefined,
  pending: readonly PendingEdit[],
  history: AppliedHistory,
  version: number,
  sent: ReadonlySet<string>,
): { kept: PendingEdit[]; conflicts: ConflictEvent[] } {
  const landed = new Set(history.ops.map((h) => h.opId));
  // The history can vouch only for edits based inside it, and only if it reaches `version`.
  const checkableFrom = history.last === version ? history.from : Number.POSITIVE_INFINITY;
  const kept: PendingEdit[] = [];
  const conflicts: ConflictEvent[] = [];
  for (const edit of pending) {
    if (landed.has(edit.opId)) continue;
    if (edit.baseVersion < checkableFrom) {
      kept.push(edit);
      continue;
    }
    const clash = clashingOps(schema, edit, history.ops, sent);
    if (clash.length) conflicts.push({ edit, ops: clash });
    else kept.push({ ...edit, baseVersion: version });
  }
  return { kept, conflicts };
}

/** `confirmed` with the pending edits that still apply to it, in order (the client's view). */
export function applyPending(schema: Schema | undefined, confirmed: unknown, pending: readonly PendingEdit[]): unknown {
  let view = confirmed;
  if (schema) {
    for (const p of pending) {
      const r = applyOp(schema, view, p.op);
      if (r.ok) view = r.state;
    }
  }
  return view;
}

export class PendingEdits {
  /** Edits sent (or waiting to be sent) and not yet answered, in order. */
  readonly edits: PendingEdit[] = [];
  private readonly history = new AppliedHistory(HISTORY);
  /** Ids of the last `HISTORY` edits this client sent (they never clash with its later edits). */
  private readonly sent = new Set<string>();
  /** Transient refusals per pending edit. */
  private readonly retries = new Map<string, number>();
  /** Set after a reconnect until the history (since, upTo] has arrived. */
  private resume: { since: number; upTo: number } | null = null;

  constructor(private readonly schema: Schema | undefined) {}

  /** A resume's history is still coming in: edits must wait, their fate is not known yet. */
  get resuming(): boolean {
    return this.resume !== null;
  }

  add(edit: PendingEdit): void {
    this.edits.push(edit);
    this.sent.add(edit.opId);
    if (this.sent.size > HISTORY) this.sent.delete(this.sent.values().next().value as string);
  }

  has(edit: PendingEdit): boolean {
    return this.edits.includes(edit);
  }

  /** A snapshot at `version` arrived. */
  snapshot(version: number): void {
    this.history.startAt(version);
  }

  /**
   * The first snapshot on a new socket, at `version`, when the client was at `previous`. True
   * when pending edits may have landed in between: ask for the history since `previous` (a
   * resume) before deciding anything about them.
   */
  startResume(previous: number, version: number): boolean {
    if (previous < 0 || this.edits.length === 0 || previous >= version) return false;
    this.resume = { since: previous, upTo: version };
    return true;
  }

  /** The socket ended: a resume asked on it will not be answered. */
  socketClosed(): void {
    this.resume = null;
  }

  /**
   * An `applied` op the client's state already holds (a resume's history). True once the
   * history is complete: the pending edits can then be rebased.
   */
  historyOp(op: AppliedOp): boolean {
    if (!this.resume || op.version <= this.resume.since) return false;
    this.remember(op);
    if (op.version < this.resume.upTo) return false;
    this.resume = null;
    return true;
  }

  /** A new `applied` op (the next version): remembered, and one of this client's edits if it was. */
  landed(op: AppliedOp): void {
    this.remember(op);
    const mine = this.edits.findIndex((p) => p.opId === op.opId);
    if (mine >= 0) this.edits.splice(mine, 1);
  }

  /**
   * Re-checks the pending edits at `version` (`rebasePending`): keeps the ones to send again and
   * returns the conflicts.
   */
  rebase(version: number): ConflictEvent[] {
    const { kept, conflicts } = rebasePending(this.schema, this.edits, this.history, version, this.sent);
    this.edits.splice(0, this.edits.length, ...kept);
    return conflicts;
  }

  /**
   * A resume was answered with a snapshot: the history is gone, so the fate of the pending
   * edits cannot be learned. They are all returned as unconfirmed conflicts, never dropped silently.
   */
  lose(): ConflictEvent[] {
    this.resume = null;
    return this.edits.splice(0).map((edit) => ({ edit, ops: [], unconfirmed: true }));
  }

  /**
   * The server's `conflict` frame for `opId`. Its `ops` list every op since the base that
   * overlaps the edit, this client's own included (an edit it sent on an earlier connection
   * counts as another window's to the server). When one of them is someone else's, the edit is
   * no longer pending: its conflict, with only those ops. When all are this client's own, the
   * person only changed their own earlier edit: it stays pending, based on `version` now, to
   * be sent again (a bounded number of times).
   */
  conflict(
    opId: string,
    ops: readonly AppliedOp[],
    version: number,
  ): ConflictEvent | { retry: PendingEdit } | undefined {
    const i = this.edits.findIndex((p) => p.opId === opId);
    if (i < 0) return undefined;
    const clashing = clashingOps(this.schema, this.edits[i], ops, this.sent);
    const tries = this.retries.get(opId) ?? 0;
    if (clashing.length === 0 && ops.length > 0 && tries < MAX_RETRIES) {
      this.retries.set(opId, tries + 1);
      this.edits[i] = { ...this.edits[i], baseVersion: Math.max(version, ...ops.map((o) => o.version)) };
      return { retry: this.edits[i] };
    }
    const [edit] = this.edits.splice(i, 1);
    return { edit, ops: clashing };
  }

  /**
   * An `applied` op older than the client's version that answers one of its pending edits (sent
   * again after a reconnect, it had landed already): the edit is done. True if it was one.
   */
  answeredAgain(op: AppliedOp): boolean {
    const mine = this.edits.findIndex((p) => p.opId === op.opId);
    if (mine < 0) return false;
    this.edits.splice(mine, 1);
    return true;
  }

  /** An `error` frame about `ref` with `code`. */
  refused(ref: string | undefined, code: string): Refusal {
    const i = ref === undefined ? -1 : this.edits.findIndex((p) => p.opId === ref);
    if (i < 0) return {};
    const edit = this.edits[i];
    const tries = this.retries.get(edit.opId) ?? 0;
    if (RETRYABLE.has(code) && tries < MAX_RETRIES) {
      // Not refused, only not now: keep the edit and send it again, backing off.
      this.retries.set(edit.opId, tries + 1);
      return { retry: edit, delayMs: RETRY_DELAY_MS * 2 ** tries };
    }
    this.edits.splice(i, 1);
    return { edit };
  }

  private remember(op: AppliedOp): void {
    // Nothing pending: no edit can be refused again, so the counts can go.
    if (this.edits.length === 0) this.retries.clear();
    this.history.add(op);
  }
}
