/**
 * The open sockets of a miniapp session and whose they are. Like the op log it is mutated in
 * place by the session's rules, not copied: copying a record of every socket on each join and
 * leave (an object rest that drops one key is among V8's slowest copies) was most of what a
 * join cost the actor. Who is online is counted per user as sockets come and go, and the
 * sorted list is built only when it changes; each list handed out is never changed afterwards.
 */
export class Conns {
  /** Socket → user. */
  private readonly users = new Map<string, string>();
  /** User → sockets open. */
  private readonly counts = new Map<string, number>();
  private online: string[] | null = [];

  constructor(entries: Iterable<[conn: string, user: string]> = []) {
    for (const [conn, user] of entries) this.add(conn, user);
  }

  get size(): number {
    return this.users.size;
  }

  /** False when `conn` was already open. */
  add(conn: string, user: string): boolean {
    if (this.users.has(conn)) return false;
    this.users.set(conn, user);
    const n = this.counts.get(user) ?? 0;
    this.counts.set(user, n + 1);
    if (n === 0) this.online = null;
    return true;
  }

  /** False when `conn` was not open. */
  delete(conn: string): boolean {
    const user = this.users.get(conn);
    if (user === undefined) return false;
    this.users.delete(conn);
    const n = this.counts.get(user) ?? 1;
    if (n > 1) this.counts.set(user, n - 1);
    else {
      this.counts.delete(user);
      this.online = null;
    }
    return true;
  }

  /** Distinct users online, sorted (the same array until they change: never modify it). */
  onlineUsers(): string[] {
    this.online ??= [...this.counts.keys()].sort();
    return this.online;
  }
}
