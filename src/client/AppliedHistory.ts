/**
 * The last applied ops the client SDK knows of, kept so that after a reconnect its pending
 * edits (whose base may be older than when they were sent) can be checked against what
 * others did meanwhile. The window never has a gap: it holds every version in
 * (`from`, `last`], at most `limit` of them. A resume's history fills the gap a snapshot left,
 * in order; an op that does not follow on starts the window again.
 */
import type { AppliedOp } from '../../actors/miniappFrames.ts';

export class AppliedHistory {
  /** In version order, one per version. */
  readonly ops: AppliedOp[] = [];
  /** The version just before `ops[0]` (or the snapshot's, while empty); -1 before any. */
  from = -1;

  /** @param limit how many ops to keep; the server keeps at least as many versions. */
  constructor(private readonly limit: number) {}

  /** The newest version the window reaches. */
  get last(): number {
    return this.ops.length ? this.ops[this.ops.length - 1].version : this.from;
  }

  /**
   * A snapshot at `version` arrived. An empty window starts there; a kept one stays, because a
   * resume's history (asked for after a reconnect) continues it.
   */
  startAt(version: number): void {
    if (this.ops.length === 0) this.from = version;
  }

  /** Adds an op; one the window already covers is ignored. */
  add(op: AppliedOp): void {
    if (op.version <= this.last) return;
    if (op.version !== this.last + 1) {
      this.ops.length = 0;
      this.from = op.version - 1;
    }
    this.ops.push(op);
    if (this.ops.length > this.limit) this.from = (this.ops.shift() as AppliedOp).version;
  }
}
