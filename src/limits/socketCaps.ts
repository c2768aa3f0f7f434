/**
 * Caps on open sockets sharing a key (a user, a session): MAX_SOCKETS_PER_USER and
 * MAX_SOCKETS_PER_SESSION. The socket endpoint admits an upgrade against its caps before it
 * opens the socket and releases them when the socket closes. Here the in-process counts of
 * single-node mode; `createRedisSocketCaps` counts across the processes of a cluster.
 */

/** One cap a socket counts against: at most `max` open sockets with `key` (max > 0). */
export interface CapLimit {
  key: string;
  max: number;
}

export interface SocketCaps {
  /**
   * Counts one socket against every cap, all or none: null when it was counted, else the first
   * cap that is full (and nothing was counted).
   */
  admit<C extends CapLimit>(caps: readonly C[]): Promise<C | null>;
  /** `admit` without waiting, where the counts are this process's own (single-node mode); absent otherwise. */
  admitNow?<C extends CapLimit>(caps: readonly C[]): C | null;
  /** Uncounts one socket that `admit` counted against these keys. */
  release(keys: readonly string[]): void;
  /** Stops whatever runs in the background; the counts of this process are forgotten. */
  close(): Promise<void>;
}

/** Open sockets per key in this process; the synchronous core of the local caps. */
export class CapCounts {
  private readonly counts = new Map<string, number>();

  /** Counts against every cap, or returns the first full one (counting nothing). */
  admit<C extends CapLimit>(caps: readonly C[]): C | null {
    const full = caps.find((cap) => this.of(cap.key) >= cap.max);
    if (full) return full;
    this.add(caps.map((cap) => cap.key));
    return null;
  }

  /** Counts one socket against `keys` without a check (another store already admitted it). */
  add(keys: readonly string[]): void {
    for (const key of keys) this.counts.set(key, this.of(key) + 1);
  }

  release(keys: readonly string[]): void {
    for (const key of keys) {
      const left = this.of(key) - 1;
      if (left > 0) this.counts.set(key, left);
      else this.counts.delete(key);
    }
  }

  of(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  entries(): IterableIterator<[string, number]> {
    return this.counts.entries();
  }
}

/** Single-node mode: the counts of this process are all there is. */
export function createLocalSocketCaps(): SocketCaps {
  const counts = new CapCounts();
  return {
    // Checked and counted in one synchronous step: concurrent upgrades cannot all slip under a cap.
    admit: async (caps) => counts.admit(caps),
    admitNow: (caps) => counts.admit(caps),
    release: (keys) => counts.release(keys),
    close: async () => {},
  };
}
