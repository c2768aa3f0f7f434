/** The few HTTP calls the benchmark makes to the Archety server: create sessions, read metrics. */

/** Creates `count` trip-planner sessions with every benchmark user as a participant. */
export async function createSessions(o: {
  baseUrl: string;
  token: string;
  participants: string[];
  count: number;
  concurrency: number;
  onProgress?: (done: number) => void;
}): Promise<string[]> {
  const ids: string[] = new Array(o.count);
  let next = 0;
  let done = 0;
  const lane = async () => {
    while (next < o.count) {
      const i = next++;
      const res = await fetch(`${o.baseUrl}/v1/miniapps`, {
        method: 'POST',
        headers: { authorization: `Bearer ${o.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ app: 'trip-planner', title: `Bench trip ${i}`, participants: o.participants }),
      });
      const body = (await res.json()) as { id?: string };
      if (res.status !== 201 || !body.id)
        throw new Error(`POST /v1/miniapps answered ${res.status}: ${JSON.stringify(body)}`);
      ids[i] = body.id;
      if (++done % 250 === 0) o.onProgress?.(done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.count) }, lane));
  return ids;
}

/** Samples of the server's Prometheus text, by series (`name{labels}` or `name`). */
export async function readMetrics(baseUrl: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

/** Relay messages the server's conversations processed (`archety_conversation_messages_total`, every outcome). */
export function processedMessages(m: Map<string, number>): number {
  let n = 0;
  for (const [k, v] of m) if (k.startsWith('archety_conversation_messages_total')) n += v;
  return n;
}

/** Mean messages per conversation commit between two readings (`archety_conversation_commit_messages`). */
export function messagesPerCommit(before: Map<string, number>, after: Map<string, number>): number {
  const d = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  const commits = d('archety_conversation_commit_messages_count');
  return commits > 0 ? d('archety_conversation_commit_messages_sum') / commits : Number.NaN;
}

/** Mean writes per group-commit transaction between two metric readings. */
export function meanCommitBatch(before: Map<string, number>, after: Map<string, number>): number {
  const d = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  const commits = d('archety_group_commit_writes_count');
  return commits > 0 ? d('archety_group_commit_writes_sum') / commits : Number.NaN;
}

/** Commits per second between two readings `ms` apart. */
export function commitRate(before: Map<string, number>, after: Map<string, number>, ms: number): number {
  const commits =
    (after.get('archety_group_commit_writes_count') ?? 0) - (before.get('archety_group_commit_writes_count') ?? 0);
  return (commits * 1000) / ms;
}

/** Mean duration of one group-commit transaction between two readings, ms. */
export function meanCommitMs(before: Map<string, number>, after: Map<string, number>): number {
  const d = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  const commits = d('archety_group_commit_seconds_count');
  return commits > 0 ? (d('archety_group_commit_seconds_sum') * 1000) / commits : Number.NaN;
}

/**
 * Percentile `p` of the server's histogram `name` (seconds) between two readings: the upper
 * bound of the bucket it falls in, ms.
 */
export function histogramMs(name: string, before: Map<string, number>, after: Map<string, number>, p: number): number {
  const buckets: { le: number; n: number }[] = [];
  const prefix = `${name}_bucket{le="`;
  for (const [key, value] of after) {
    if (!key.startsWith(prefix)) continue;
    const le = key.slice(prefix.length, -2);
    buckets.push({ le: le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), n: value - (before.get(key) ?? 0) });
  }
  buckets.sort((a, b) => a.le - b.le);
  const total = buckets.at(-1)?.n ?? 0;
  if (!total) return Number.NaN;
  const bucket = buckets.find((b) => b.n >= (p / 100) * total);
  return (bucket?.le ?? Number.POSITIVE_INFINITY) * 1000;
}

/** A histogram bound from `histogramMs` for people: `≤ 25 ms`, or `> 2,500 ms` past the last bucket. */
export function describeBound(ms: number, lastFiniteMs: number): string {
  if (Number.isNaN(ms)) return 'n/a';
  return ms === Number.POSITIVE_INFINITY
    ? `> ${lastFiniteMs.toLocaleString('en-US')} ms`
    : `≤ ${ms.toLocaleString('en-US')} ms`;
}
