/**
 * Things in progress per key — request bodies being received per client address — with a
 * ceiling: a client that opens many slow uploads holds buffers and sockets, so each address
 * may have only so many at once. In-process: these are this process's buffers.
 */
export class InFlightLimiter {
  private readonly counts = new Map<string, number>();

  /** `max` slots per key; 0 means no limit. */
  constructor(private readonly max: number) {}

  /** Takes a slot for `key`: its release function (safe to call twice), or undefined when all are taken. */
  acquire(key: string): (() => void) | undefined {
    if (this.max === 0) return () => {};
    const held = this.counts.get(key) ?? 0;
    if (held >= this.max) return undefined;
    this.counts.set(key, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left > 0) this.counts.set(key, left);
      else this.counts.delete(key);
    };
  }

  /** Keys holding at least one slot (for tests and metrics). */
  get size(): number {
    return this.counts.size;
  }
}
