/**
 * Counts what the hostile user sent and how each thing was answered, by kind: the suite's
 * one-line summary is built from it, so every request and frame is accounted for.
 */
export class Tally {
  private readonly counts = new Map<string, Map<string, number>>();

  /** Counts one `outcome` (a status, an error code, a close code) of `kind`. */
  add(kind: string, outcome: string | number): void {
    const byOutcome = this.counts.get(kind) ?? new Map<string, number>();
    this.counts.set(kind, byOutcome);
    const key = String(outcome);
    byOutcome.set(key, (byOutcome.get(key) ?? 0) + 1);
  }

  /** The outcomes of `kind` and how often each came. */
  of(kind: string): Record<string, number> {
    return Object.fromEntries(this.counts.get(kind) ?? []);
  }

  total(kind: string): number {
    return [...(this.counts.get(kind)?.values() ?? [])].reduce((a, b) => a + b, 0);
  }

  /** Every kind whose name matches `pattern`, with its outcomes. */
  matching(pattern: RegExp): [string, Record<string, number>][] {
    return [...this.counts.keys()].filter((k) => pattern.test(k)).map((k) => [k, this.of(k)]);
  }

  /** `kind{outcome:n,…}` for each kind, sorted, on one line. */
  toString(): string {
    return [...this.counts.keys()]
      .sort()
      .map((kind) => {
        const outcomes = [...(this.counts.get(kind) ?? [])].sort(([, a], [, b]) => b - a);
        return `${kind}{${outcomes.map(([o, n]) => `${o}:${n}`).join(',')}}`;
      })
      .join(' ');
  }
}
