/**
 * The recent ops of a miniapp session: contiguous versions, O(1) append and lookup by version
 * or by (user, opId), and the paths they touched (`PathIndex`) for the conflict check. It is
 * mutated in place by the session's rules — unlike the rest of the actor's context — because
 * copying a 256-entry array on every op and every commit was a large share of the server's
 * garbage at load (see bench/README.md).
 */
import type { AppliedOp } from './miniappFrames.ts';
import type { Path } from './ops.ts';
import { PathIndex } from './PathIndex.ts';

/** An op in the session's log. */
export interface LoggedOp extends AppliedOp {
  /** What it touched, with items that carry an id addressed by id. */
  touched: Path;
  /** The socket that sent it (an op never conflicts with the earlier ops of its socket). */
  conn?: string;
  /** Its number among the socket's ops (`OpRequest.seq`). */
  seq?: number;
  /** The state after it, kept only until it is committed. */
  state?: unknown;
}

export class OpLog {
  /**
   * Held entries are those from `head` on; a slot before `head` is emptied when its entry is
   * forgotten, so the array (compacted only now and then) keeps no forgotten op alive.
   */
  private entries: (LoggedOp | undefined)[];
  private head = 0;
  /**
   * opId → entry, one map: users choose their opIds, so two may choose the same one, and the
   * entry of the later is then in `clashes`, by (user, opId). Nested maps per user cost a
   * second lookup on every op and grew and shrank a map per user (bench/README.md).
   */
  private readonly byOpId = new Map<string, LoggedOp>();
  private clashes: Map<string, LoggedOp> | undefined = undefined;
  /** The paths the held ops touched (those from `indexedFrom` on). */
  private readonly paths = new PathIndex();
  /** Ops prepended from the store are not in `paths`: they are all older than this version. */
  private indexedFrom = Number.NEGATIVE_INFINITY;
  /** Entries forgotten since `paths` last dropped their paths (it does so once per window). */
  private forgotten = 0;

  /** `entries`: ascending, gap-free versions. */
  constructor(
    entries: LoggedOp[],
    private window: number,
  ) {
    this.entries = entries.slice();
    for (const e of entries) {
      this.index(e);
      this.paths.add(e.touched, e.version, e.conn, e.seq);
    }
  }

  get length(): number {
    return this.entries.length - this.head;
  }

  /** The first version held, or `next` when empty. */
  firstVersion(next: number): number {
    return this.length ? this.first.version : next;
  }

  /** The entry of `version`, if held. */
  at(version: number): LoggedOp | undefined {
    if (!this.length) return undefined;
    const first = this.first.version;
    if (version < first || version >= first + this.length) return undefined;
    return this.entries[this.head + version - first];
  }

  find(by: string, opId: string): LoggedOp | undefined {
    const e = this.byOpId.get(opId);
    if (e?.by === by) return e;
    return this.clashes?.get(clashKey(by, opId));
  }

  private index(e: LoggedOp): void {
    const held = this.byOpId.get(e.opId);
    if (held === undefined || held.by === e.by) {
      this.byOpId.set(e.opId, e);
      return;
    }
    this.clashes ??= new Map();
    this.clashes.set(clashKey(e.by, e.opId), e);
  }

  private unindex(e: LoggedOp): void {
    if (this.byOpId.get(e.opId) === e) this.byOpId.delete(e.opId);
    else if (this.clashes?.get(clashKey(e.by, e.opId)) === e) {
      this.clashes.delete(clashKey(e.by, e.opId));
      if (this.clashes.size === 0) this.clashes = undefined;
    }
  }

  /** Entries with versions > `version`, ascending. */
  after(version: number): LoggedOp[] {
    if (!this.length) return [];
    const from = Math.max(this.head, this.head + version + 1 - this.first.version);
    return this.entries.slice(from) as LoggedOp[];
  }

  /**
   * Puts older ops (loaded from the store) in front, keeping the run gap-free, and lets the
   * log hold them (up to `maxWindow` entries) so the next stale request needs no reload.
   */
  prepend(older: LoggedOp[], maxWindow: number): void {
    if (!this.length) return;
    const first = this.first.version;
    const run: LoggedOp[] = [];
    for (let i = older.length - 1, want = first - 1; i >= 0 && older[i].version <= want; i--) {
      if (older[i].version !== want) continue;
      run.unshift(older[i]);
      want--;
    }
    if (!run.length) return;
    this.indexedFrom = Math.max(this.indexedFrom, first);
    this.entries = [...run, ...this.toArray()];
    this.head = 0;
    for (const e of run) if (!this.find(e.by, e.opId)) this.index(e);
    this.window = Math.min(maxWindow, Math.max(this.window, this.length));
  }

  append(entry: LoggedOp): void {
    this.entries.push(entry);
    this.index(entry);
    this.paths.add(entry.touched, entry.version, entry.conn, entry.seq);
  }

  /**
   * True when no held op after `base` can conflict with an op of socket `conn` (its `seq`)
   * that claims `claimed`, told from the paths the ops touched (`PathIndex`) without listing
   * them; false when one may, or when some ops after `base` are not indexed. The caller must
   * know that every op after `base` is held.
   */
  clearOf(claimed: Path, base: number, conn: string | undefined, seq: number | undefined): boolean {
    return base + 1 >= this.indexedFrom && this.paths.clear(claimed, base, conn, seq);
  }

  /** Nodes of the path index, for tests. */
  get pathNodes(): number {
    return this.paths.size;
  }

  /** Forgets committed entries beyond the window (uncommitted ones always stay). */
  trim(committedVersion: number): void {
    while (this.length > this.window && this.first.version <= committedVersion) {
      this.unindex(this.first);
      this.entries[this.head++] = undefined;
      this.forgotten++;
    }
    if (this.forgotten >= this.window && this.length) {
      this.paths.prune(this.first.version);
      this.forgotten = 0;
    }
    if (this.head > 1024) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  toArray(): LoggedOp[] {
    return this.entries.slice(this.head) as LoggedOp[];
  }

  /** The oldest entry held (only read when the log is not empty). */
  private get first(): LoggedOp {
    return this.entries[this.head] as LoggedOp;
  }
}

/** The key of an entry whose opId another user's entry holds: an opId has no U+0000 (the frame's text rule), so the key's last one splits it. */
const clashKey = (by: string, opId: string) => `${by}\u0000${opId}`;
