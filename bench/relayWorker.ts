/**
 * A load generator for `bench/relay.ts` (a child process with IPC): posts relay events to
 * `POST /v1/relay/events` over keep-alive HTTP/1.1 connections of its own (`Connection`), closed-loop (N requests in flight) or
 * open-loop (a fixed rate), and reports acknowledgements and their latencies.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Connection } from './lib/httpConnection.ts';

export interface PostJob {
  cmd: 'post';
  id: number;
  url: string;
  token: string;
  /** closed: `concurrency` requests always in flight; open: `rate` requests per second. */
  mode: 'closed' | 'open';
  concurrency: number;
  rate: number;
  durationMs: number;
  /** Events per request (1 = single-event bodies). */
  batch: number;
  /** Senders are `+1555` + a number in [senderFrom, senderFrom + senders). */
  senderFrom: number;
  senders: number;
  /** Prefix of event ids (unique per job). */
  prefix: string;
  /** Stop after this many events (closed loop), if set. */
  count?: number;
}

export interface PostResult {
  requests: number;
  accepted: number;
  duplicates: number;
  failed: number;
  /** Request latencies (ms), sampled. */
  latencies: number[];
  loopDelayP99Ms: number;
}

async function run(job: PostJob): Promise<PostResult> {
  const url = new URL('/v1/relay/events', job.url);
  const head = `POST ${url.pathname} HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${job.token}\r\ncontent-type: application/json\r\n`;
  /** Idle keep-alive connections; a request takes one (or opens one) and gives it back. */
  const idle: Connection[] = [];
  const post = async (body: string) => {
    let c = idle.pop();
    while (c?.closed) c = idle.pop();
    c ??= new Connection(url);
    const answer = await c.request(head, body);
    idle.push(c);
    return answer;
  };
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const result: PostResult = { requests: 0, accepted: 0, duplicates: 0, failed: 0, latencies: [], loopDelayP99Ms: 0 };
  let seq = 0;
  const event = () => {
    const n = seq++;
    const sender = `+1555${String(job.senderFrom + (n % job.senders)).padStart(7, '0')}`;
    return {
      id: `${job.prefix}-${n}`,
      type: 'message',
      chat: { guid: `iMessage;-;${sender}`, group: false },
      sender,
      text: `hello number ${n}, I love benchmarks`,
      sentAt: new Date().toISOString(),
    };
  };
  const one = async () => {
    const body = job.batch === 1 ? event() : { events: Array.from({ length: job.batch }, event) };
    const started = performance.now();
    try {
      const res = await post(JSON.stringify(body));
      result.requests++;
      if (res.status === 202) {
        const r = JSON.parse(res.text) as { accepted: string[]; duplicates: string[] };
        result.accepted += r.accepted.length;
        result.duplicates += r.duplicates.length;
        if (result.latencies.length < 200_000) result.latencies.push(performance.now() - started);
      } else {
        result.failed += job.batch;
      }
    } catch {
      result.failed += job.batch;
    }
  };
  const end = performance.now() + job.durationMs;
  if (job.mode === 'closed') {
    const more = () => performance.now() < end && (job.count === undefined || seq < job.count);
    await Promise.all(
      Array.from({ length: job.concurrency }, async () => {
        while (more()) await one();
      }),
    );
  } else {
    const inFlight = new Set<Promise<void>>();
    const interval = 1000 / job.rate;
    let next = performance.now();
    while (performance.now() < end) {
      const now = performance.now();
      while (next <= now) {
        const p = one().finally(() => inFlight.delete(p));
        inFlight.add(p);
        next += interval;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, Math.min(5, next - performance.now()))));
    }
    await Promise.all(inFlight);
  }
  for (const c of idle) c.close();
  delay.disable();
  result.loopDelayP99Ms = delay.percentile(99) / 1e6;
  return result;
}

process.on('message', (job: PostJob) => {
  run(job).then(
    (result) => process.send?.({ id: job.id, ok: true, result }),
    (err) => process.send?.({ id: job.id, ok: false, error: String(err) }),
  );
});
