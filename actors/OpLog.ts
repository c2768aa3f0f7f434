/**
 * The recent ops of a miniapp session: contiguous versions, O(1) append and lookup by version
 * or by (user, opId). It is mutated in place by the session's rules — unlike the rest of the
 * actor's context — because copying a 256-entry array on every op and every commit was a
 * large share of the server's garbage at load (see bench/README.md).
 */
import type { LoggedOp } from './miniappSession.ts';

const key = (by: string, opId: string) => `${by}\u0000${opId}`;

export class OpLog {
  private entries: LoggedOp[];
  private head = 0;
  private readonly byOpId = new Map<string, LoggedOp>();

  /** `entries`: ascending, gap-free versions. */
  constructor(
    entries: LoggedOp[],
    private window: number,
  ) {
    this.entries = entries.slice();
    for (const e of this.entries) this.byOpId.set(key(e.by, e.opId), e);
  }

  get length(): number {
    return this.entries.length - this.head;
  }

  /** The first version held, or `next` when empty. */
  firstVersion(next: number): number {
    return this.length ? this.entries[this.head].version : next;
  }

  /** The entry of `version`, if held. */
  at(version: number): LoggedOp | undefined {
    if (!this.length) return undefined;
    const first = this.entries[this.head].version;
    if (version < first || version >= first + this.length) return undefined;
    return this.entries[this.head + version - first];
  }

  /** Replaces the entry of the same version. */
  replace(entry: LoggedOp): void {
    const i = this.head + entry.version - this.entries[this.head].version;
    this.entries[i] = entry;
    this.byOpId.set(key(entry.by, entry.opId), entry);
  }

  find(by: string, opId: string): LoggedOp | undefined {
    return this.byOpId.get(key(by, opId));
  }

  /** Entries with versions > `version`, ascending. */
  after(version: number): LoggedOp[] {
    if (!this.length) return [];
    const from = Math.max(this.head, this.head + version + 1 - this.entries[this.head].version);
    return this.entries.slice(from);
  }

  /**
   * Puts older ops (loaded from the store) in front, keeping the run gap-free, and lets the
   * log hold them (up to `maxWindow` entries) so the next stale request needs no reload.
   */
  prepend(older: LoggedOp[], maxWindow: number): void {
    if (!this.length) return;
    const first = this.entries[this.head].version;
    const run: LoggedOp[] = [];
    for (let i = older.length - 1, want = first - 1; i >= 0 && older[i].version <= want; i--) {
      if (older[i].version !== want) continue;
      run.unshift(older[i]);
      want--;
    }
    if (!run.length) return;
    this.entries = [...run, ...this.entries.slice(this.head)];
    this.head = 0;
    for (const e of run) if (!this.byOpId.has(key(e.by, e.opId))) this.byOpId.set(key(e.by, e.opId), e);
    this.window = Math.min(maxWindow, Math.max(this.window, this.length));
  }

  append(entry: LoggedOp): void {
    this.entries.push(entry);
    this.byOpId.set(key(entry.by, entry.opId), entry);
  }

  /** Forgets committed entries beyond the window (uncommitted ones always stay). */
  trim(committedVersion: number): void {
    while (this.length > this.window && this.entries[this.head].version <= committedVersion) {
      const e = this.entries[this.head++];
      if (this.byOpId.get(key(e.by, e.opId)) === e) this.byOpId.delete(key(e.by, e.opId));
    }
    if (this.head > 1024) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  toArray(): LoggedOp[] {
    return this.entries.slice(this.head);
  }
}
