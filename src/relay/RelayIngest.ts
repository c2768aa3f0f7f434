/**
 * Durable, exactly-once ingest: events are validated one by one, stored in `relay_inbox`
 * (through the group commit; a seen event id is a duplicate), acknowledged only once stored,
 * and then handed to their conversation's actor. Rows not yet processed are delivered again
 * by a sweep (after a restart, or when an actor failed), one sweep at a time; a row delivered
 * twice is processed once, because the conversation's commit only applies while its row is
 * still pending. A conversation that stops while working on a row counts a failed attempt
 * against that row: it waits RELAY_RETRY_BACKOFF_MS × 2^(attempts − 1) before the sweep
 * delivers it again, and is `failed` after RELAY_MAX_ATTEMPTS (listed and retried by admins).
 *
 * Ingest does not wait for processing. An event is handed to its conversation when the
 * conversation has no other event being processed here and at most RELAY_PROCESSING_WINDOW
 * conversations do; otherwise it waits, behind its conversation's earlier events (their order
 * holds), and conversations take turns in the order they became ready. A conversation whose
 * turn comes is handed up to RELAY_BATCH_EVENTS of its waiting events at once (fewer while the
 * window is shrunk), which it works through in order and commits together. So a burst is
 * acknowledged as fast as it can be stored while processing runs behind, and a conversation
 * with many waiting events never holds up the others (a window of events in arrival order
 * would fill with one busy conversation's messages, processed one at a time). The backlog (waiting + in the window) is bounded: a
 * request that would take it past RELAY_BACKLOG_MAX is refused whole (429
 * `relay_backlogged`, `Retry-After` from the processing rate), nothing of it stored. Waiting
 * events keep their payload in memory up to a budget of bytes; past it only their inbox row's
 * number is kept, and the payload is read back from the inbox when their turn comes.
 */

import { performance } from 'node:perf_hooks';
import type { Inbound, InboundItem, InboundMessage } from '../../actors/conversationTypes.ts';
import { CONVERSATION } from '../conversation/createConversationKind.ts';
import { AppError, type ErrorCode, isAppError } from '../errors.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import type { RateLimiter } from '../limits/RateLimiter.ts';
import { withContext } from '../observability/context.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { GroupCommitter } from '../store/GroupCommitter.ts';
import type { FailedInbox, InboxItem, InboxResult, RelayRepository } from '../store/relayRepository.ts';
import { batchFor, nextWindow, SHARE_EVERY_MS } from './processingShare.ts';
import { conversationKeyOf, parseRelayEvent, type RelayEvent, type RelayEventSchema } from './relayEvent.ts';

export const INBOX = 'inbox';

export interface IngestResult {
  accepted: string[];
  duplicates: string[];
  rejected: { index: number; id?: string; error: { code: ErrorCode; message: string; path?: (string | number)[] } }[];
}

export interface RelayIngestDeps {
  committer: GroupCommitter;
  repo: RelayRepository;
  host: ActorHost;
  schema: RelayEventSchema;
  /** Per sender: over it, messages are stored but answered once per burst. */
  senders: RateLimiter;
  metrics: Metrics;
  log: Logger;
  /** RELAY_INBOX_SWEEP_MS: how often pending rows are delivered again (ms). */
  sweepEveryMs: number;
  /** RELAY_MAX_ATTEMPTS: failed attempts before an event is marked failed. */
  maxAttempts: number;
  /** RELAY_RETRY_BACKOFF_MS: wait after the first failed attempt (ms), doubled after each further one. */
  retryBackoffMs: number;
  /** RELAY_PROCESSING_WINDOW: conversations processing events here at once, at most. */
  window: number;
  /**
   * RELAY_BATCH_EVENTS: a conversation's waiting events handed to it at once, at most; it works
   * them through one after the other and commits them together (`processWork`).
   */
  batchEvents: number;
  /** RELAY_BACKLOG_MAX: accepted events not yet processed here (waiting or in the window), at most. */
  backlogMax: number;
  /** RELAY_BACKLOG_HELD_BYTES: bytes of waiting events' payloads held in memory; the rest are read back from the inbox. */
  heldBytesMax: number;
  /** Conversations owing a throttled sender an answer for more than `olderThanMs`, at most `limit`. */
  owing: (olderThanMs: number, limit: number) => Promise<string[]>;
  /** BURST_QUIET_MS: a live conversation answers what it owes after this much quiet (ms). */
  burstQuietMs: number;
}

/**
 * A periodic sweep delivers rows pending for 1.5 sweep intervals: younger ones are most likely
 * still on their way through their conversation.
 */
const SWEEP_AGE_FACTOR = 1.5;
const SWEEP_BATCH = 500;
/** Waiting events whose payloads are read back from the inbox in one query. */
const READ_BACK_BATCH = 200;

export function toInbound(event: RelayEvent, receivedAt: number): InboundMessage {
  return {
    eventId: event.id,
    sender: event.sender,
    chatGuid: event.chat.guid,
    text: event.text ?? '',
    ...(event.replyTo ? { replyTo: event.replyTo } : {}),
    attachments: event.attachments.map((a) => ({ id: a.id, mime: a.mime.toLowerCase(), data: a.data, url: a.url })),
    receivedAt,
  };
}

/** About how much memory an event's payload holds (its texts; fields of fixed size count 512). */
function sizeOf(event: RelayEvent): number {
  let bytes = 512 + 2 * (event.text?.length ?? 0);
  for (const a of event.attachments) bytes += 2 * ((a.data?.length ?? 0) + (a.url?.length ?? 0));
  return bytes;
}

/** A stored event on its way to its conversation. */
interface Delivery {
  seq: number;
  event: RelayEvent;
  receivedAt: number;
  throttled: boolean;
}

/** An accepted event waiting for its turn. */
interface Waiting {
  seq: number;
  /** Its conversation. */
  key: string;
  /** Its payload; undefined: not held (read back when its turn comes); null: no longer pending. */
  event: RelayEvent | undefined | null;
  receivedAt: number;
  throttled: boolean;
  /** What its payload counts against the budget while held. */
  bytes: number;
}

export class RelayIngest {
  /** Inbox rows handed to an actor and not yet processed: seq → conversation key. */
  private readonly inFlight = new Map<number, string>();
  /** Waiting events per conversation, oldest first. */
  private readonly queues = new Map<string, Waiting[]>();
  /** Conversations with waiting events and none being processed, in the order they became ready (from `readyHead`). */
  private ready: string[] = [];
  private readyHead = 0;
  /** Events being processed per conversation (the window counts conversations). */
  private readonly active = new Map<string, number>();
  /** The inbox rows of the waiting events (their count is the waiting part of the backlog). */
  private readonly waitingSeqs = new Set<number>();
  /** Waiting events whose payloads are not held, oldest first: read back in batches. */
  private unheld: Waiting[] = [];
  private heldBytes = 0;
  /** Events of requests admitted and not yet waiting or delivered (being stored). */
  private reserved = 0;
  /** Payloads being read back: nothing is delivered meanwhile (order). */
  private reading = false;
  private pumpScheduled = false;
  /** Processed events, sampled once a second for the processing rate (Retry-After). */
  private processedCount = 0;
  private rate = { at: performance.now(), count: 0, perSecond: 0 };
  private sweeper: NodeJS.Timeout | undefined;
  /** The sweep running, if any: sweeps never overlap (a slow one is not joined by the next). */
  private sweeping: Promise<unknown> | null = null;
  /**
   * The age a sweep stopped at for lack of room (the backlog was full): it goes on once the
   * backlog is half empty, and until it has, new events are refused, so old ones go first.
   */
  private sweepBehind: number | null = null;
  private stopped = false;
  /** Conversations that may process an event at once now: RELAY_PROCESSING_WINDOW, less while ingest needs the loop (`processingShare.ts`). */
  private limit: number;
  /** Ingest requests that stored events since the window was last adjusted, and their time storing (ms). */
  private requests = 0;
  private storeMs = 0;
  private share: NodeJS.Timeout | undefined;
  /** The event loop's utilization when the window was last adjusted. */
  private loop = performance.eventLoopUtilization();

  constructor(private readonly deps: RelayIngestDeps) {
    // Sized by the estimate the backlog uses, not by serializing each event once more.
    deps.committer.register<InboxItem>(INBOX, deps.repo.writeInbox, {
      ownLane: true,
      oneStatement: true,
      sizeOf: (i) => sizeOf(i.payload as RelayEvent),
    });
    this.limit = deps.window;
  }

  /** Accepted events not yet processed here: waiting, being stored, or in the window. */
  backlog(): { waiting: number; processing: number; window: number } {
    return { waiting: this.waitingSeqs.size + this.reserved, processing: this.inFlight.size, window: this.limit };
  }

  private backlogSize(): number {
    return this.waitingSeqs.size + this.reserved + this.inFlight.size;
  }

  /** Validates and stores `events`; resolves once the accepted ones are durable. */
  async ingest(events: unknown[]): Promise<IngestResult> {
    const result: IngestResult = { accepted: [], duplicates: [], rejected: [] };
    const valid: { index: number; event: RelayEvent }[] = [];
    events.forEach((raw, index) => {
      try {
        valid.push({ index, event: parseRelayEvent(this.deps.schema, raw) });
      } catch (err) {
        if (!isAppError(err)) throw err;
        const id =
          typeof (raw as { id?: unknown })?.id === 'string' ? ((raw as { id: string }).id as string) : undefined;
        result.rejected.push({
          index,
          ...(id !== undefined && id.length <= 200 ? { id } : {}),
          error: { code: err.code, message: err.message, ...(err.path ? { path: err.path } : {}) },
        });
      }
    });
    if (valid.length) this.admit(valid.length);
    const receivedAt = Date.now();
    let stored: InboxResult[];
    const storing = performance.now();
    try {
      stored = await Promise.all(
        valid.map(({ event }) =>
          this.deps.committer.submit<InboxItem, InboxResult>(INBOX, null, 0, {
            eventId: event.id,
            conversationKey: conversationKeyOf(event),
            payload: event,
          }),
        ),
      );
    } catch (err) {
      this.reserved -= valid.length;
      throw err;
    }
    if (valid.length) {
      this.requests++;
      this.storeMs += performance.now() - storing;
    }
    const accepted: { seq: number; event: RelayEvent }[] = [];
    valid.forEach(({ event }, i) => {
      const row = stored[i];
      if (row) {
        result.accepted.push(event.id);
        accepted.push({ seq: row.seq, event });
      } else {
        result.duplicates.push(event.id);
      }
    });
    void this.accept(accepted, receivedAt, valid.length);
    const m = this.deps.metrics.relayEvents;
    m.inc({ outcome: 'accepted' }, result.accepted.length);
    m.inc({ outcome: 'duplicate' }, result.duplicates.length);
    m.inc({ outcome: 'rejected' }, result.rejected.length);
    return result;
  }

  /** Reserves room for `n` events in the backlog, or refuses the request. */
  private admit(n: number): void {
    this.sampleRate();
    const backlog = this.backlogSize();
    if (this.sweepBehind === null && backlog + n <= this.deps.backlogMax) {
      this.reserved += n;
      return;
    }
    this.deps.metrics.relayEvents.inc({ outcome: 'backlogged' }, n);
    throw new AppError(
      'relay_backlogged',
      `this server is behind on processing relay events (${backlog} not yet processed); nothing of this request was stored`,
      { retryAfter: this.retryAfterS(Math.max(n, backlog + n - this.deps.backlogMax)) },
    );
  }

  /** Seconds until about `n` events are processed at the recent rate: 1 to 60. */
  private retryAfterS(n: number): number {
    const perSecond = Math.max(this.rate.perSecond, 1);
    return Math.min(60, Math.max(1, Math.ceil(n / perSecond)));
  }

  /** The processing rate over the last second or more (sampled by each request: often while it matters). */
  private sampleRate(): void {
    const now = performance.now();
    const elapsed = now - this.rate.at;
    if (elapsed < 1000) return;
    const perSecond = ((this.processedCount - this.rate.count) * 1000) / elapsed;
    // Nothing processed: idle, not slow (nothing waited); keep the last rate measured under work.
    this.rate = { at: now, count: this.processedCount, perSecond: perSecond > 0 ? perSecond : this.rate.perSecond };
  }

  /** Stored events: their senders' budgets taken (as they arrive, not when processed), then delivered or queued, in order. */
  private async accept(events: { seq: number; event: RelayEvent }[], receivedAt: number, reserved: number) {
    try {
      const throttled = await Promise.all(
        events.map(({ event }) =>
          this.deps.senders.take(event.sender).then(
            (wait) => wait > 0,
            () => false,
          ),
        ),
      );
      events.forEach(({ seq, event }, i) => {
        this.enqueue(seq, event, receivedAt, throttled[i]);
      });
    } finally {
      this.reserved -= reserved;
    }
  }

  /**
   * Hands a stored event to its conversation now, when that conversation has nothing waiting
   * or being processed and the window has room; else it waits its turn.
   */
  private enqueue(seq: number, event: RelayEvent, receivedAt: number, throttled: boolean): void {
    if (this.inFlight.has(seq) || this.waitingSeqs.has(seq)) return;
    const key = conversationKeyOf(event);
    let queue = this.queues.get(key);
    if (!queue && !this.active.has(key) && this.active.size < this.limit) {
      void this.deliver(key, [{ seq, event, receivedAt, throttled }]);
      return;
    }
    const bytes = sizeOf(event);
    const hold = this.heldBytes + bytes <= this.deps.heldBytesMax;
    const w: Waiting = { seq, key, event: hold ? event : undefined, receivedAt, throttled, bytes: hold ? bytes : 0 };
    if (hold) this.heldBytes += bytes;
    else this.unheld.push(w);
    if (!queue) {
      queue = [];
      this.queues.set(key, queue);
      if (!this.active.has(key)) this.ready.push(key);
    }
    queue.push(w);
    this.waitingSeqs.add(seq);
    this.schedulePump();
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.stopped) return;
    this.pumpScheduled = true;
    setImmediate(() => this.pump());
  }

  /**
   * Hands ready conversations their next events (up to RELAY_BATCH_EVENTS of those held in
   * memory, in order, fewer while the window is shrunk: `batchFor`) while the window has room;
   * reads back payloads not held.
   */
  private pump(): void {
    this.pumpScheduled = false;
    while (!this.reading && this.readyHead < this.ready.length && this.active.size < this.limit) {
      const key = this.ready[this.readyHead];
      const queue = this.queues.get(key) as Waiting[];
      if (queue[0].event === undefined) {
        this.readBack();
        break;
      }
      this.readyHead++;
      const batch: Delivery[] = [];
      const most = batchFor(this.deps.batchEvents, this.limit, this.deps.window);
      while (queue.length && batch.length < most && queue[0].event !== undefined) {
        const w = queue.shift() as Waiting;
        this.waitingSeqs.delete(w.seq);
        this.heldBytes -= w.bytes;
        // null: no longer pending (processed elsewhere), nothing to deliver.
        if (w.event !== null) batch.push(w as Delivery);
      }
      if (!queue.length) this.queues.delete(key);
      if (batch.length) void this.deliver(key, batch);
      // Nothing left to deliver of what was taken: the conversation's next event is ready.
      else if (queue.length) this.ready.push(key);
    }
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.readyHead);
      this.readyHead = 0;
    }
    if (this.sweepBehind !== null && this.backlogSize() <= this.deps.backlogMax / 2) this.runSweep(this.sweepBehind);
  }

  /** Reads back the payloads of the oldest waiting events whose payloads are not held. */
  private readBack(): void {
    const entries = this.unheld.slice(0, READ_BACK_BATCH);
    this.unheld = this.unheld.slice(entries.length);
    this.reading = true;
    this.deps.repo.pendingBySeq(entries.map((e) => e.seq)).then(
      (rows) => {
        const bySeq = new Map(rows.map((r) => [r.seq, r]));
        for (const e of entries) {
          const row = bySeq.get(e.seq);
          // Not pending any more: processed meanwhile (a sweep elsewhere), nothing to do.
          e.event = row ? (row.payload as RelayEvent) : null;
          e.bytes = row ? sizeOf(e.event as RelayEvent) : 0;
          this.heldBytes += e.bytes;
        }
        this.reading = false;
        this.schedulePump();
      },
      (err) => {
        this.unheld = [...entries, ...this.unheld];
        this.deps.log.warn(
          { err, events: entries.length },
          'could not read waiting relay events back; retrying in 1 s',
        );
        setTimeout(() => {
          this.reading = false;
          this.schedulePump();
        }, 1000).unref();
      },
    );
  }

  /** Hands stored events of conversation `key` to it, in order, as one `inbound`. */
  private async deliver(key: string, batch: Delivery[]): Promise<void> {
    for (const d of batch) this.inFlight.set(d.seq, key);
    this.active.set(key, (this.active.get(key) ?? 0) + batch.length);
    const item = (d: Delivery): InboundItem => ({
      seq: d.seq,
      message: toInbound(d.event, d.receivedAt),
      throttled: d.throttled,
    });
    const message: Inbound = { type: 'inbound', ...item(batch[0]) };
    if (batch.length > 1) message.more = batch.slice(1).map(item);
    const first = batch[0].event.id;
    try {
      // The (first) event id goes with the message as its correlation id (the mailbox restores it).
      await withContext({ reqId: first }, () => this.deps.host.send(CONVERSATION, key, message));
      // In a cluster the conversation may run on another process, whose commit (or failure)
      // is never heard here: the rows are that process's to track, and a sweep's if one is lost.
      if (!this.deps.host.has(CONVERSATION, key)) for (const d of batch) this.settled(d.seq);
    } catch (err) {
      for (const d of batch) this.settled(d.seq);
      const level = isAppError(err) && err.code === 'shutting_down' ? 'debug' : 'warn';
      this.deps.log[level](
        { err, event: first, events: batch.length },
        'could not hand events to their conversation; they will be retried',
      );
    }
  }

  /** `seq` is no longer being processed here: its conversation's next event, or another conversation, may go. */
  private settled(seq: number): void {
    const key = this.inFlight.get(seq);
    if (key === undefined) return;
    this.inFlight.delete(seq);
    const n = (this.active.get(key) ?? 1) - 1;
    if (n > 0) {
      this.active.set(key, n);
      return;
    }
    this.active.delete(key);
    if (this.queues.has(key)) this.ready.push(key);
    if (this.readyHead < this.ready.length || this.sweepBehind !== null) this.schedulePump();
  }

  /** The row was processed (committed with its conversation's changes). */
  processed(seq: number): void {
    this.processedCount++;
    this.settled(seq);
  }

  /**
   * A conversation stopped: its rows in flight will be delivered again by the sweep. The
   * oldest of them (a conversation works on its rows in delivery order) is the one it was
   * working on: with `blame`, that row counts a failed attempt (not when the conversation was
   * only fenced: a lost lease, another process taking it over).
   */
  conversationFailed(key: string, blame = true): void {
    let blamed: number | undefined;
    for (const [seq, k] of this.inFlight) {
      if (k !== key) continue;
      blamed ??= seq;
      this.settled(seq);
    }
    if (blame && blamed !== undefined) void this.attemptFailed(blamed);
  }

  private async attemptFailed(seq: number): Promise<void> {
    const { repo, maxAttempts, retryBackoffMs, metrics, log } = this.deps;
    try {
      const row = await repo.attemptFailed(
        seq,
        maxAttempts,
        retryBackoffMs,
        'the conversation stopped while processing it',
      );
      if (!row) return;
      metrics.relayAttemptsFailed.inc();
      if (row.status === 'failed') {
        metrics.relayEventsFailed.inc();
        log.warn(
          { reqId: row.eventId, seq, attempts: row.attempts },
          'a relay event failed every attempt; it is listed for an admin to retry',
        );
      }
    } catch (err) {
      log.warn({ err, seq }, 'could not record a failed attempt; the event is delivered again without backoff');
    }
  }

  /** Failed events after inbox row `afterSeq`, oldest first (the admin list). */
  failed(afterSeq: number, limit: number): Promise<FailedInbox[]> {
    return this.deps.repo.failed(afterSeq, limit);
  }

  /** Sets failed event `eventId` pending with its attempts reset, and delivers it; false when there is no such failed event. */
  async retry(eventId: string): Promise<boolean> {
    const row = await this.deps.repo.retry(eventId);
    if (!row) return false;
    this.enqueue(row.seq, row.payload as RelayEvent, row.receivedAt.getTime(), false);
    return true;
  }

  /**
   * Delivers unprocessed rows received `olderThanMs` ago or earlier (all of them at start,
   * then the stale ones periodically), through the window. When the backlog fills up it stops
   * there, and goes on once the backlog is half empty (`sweepBehind`).
   */
  async sweep(olderThanMs: number): Promise<number> {
    let after = 0;
    let delivered = 0;
    this.sweepBehind = null;
    for (;;) {
      const rows = await this.deps.repo.pendingInbox(after, new Date(Date.now() - olderThanMs), SWEEP_BATCH);
      for (const row of rows) {
        after = row.seq;
        if (this.inFlight.has(row.seq) || this.waitingSeqs.has(row.seq)) continue;
        if (this.backlogSize() >= this.deps.backlogMax) {
          this.sweepBehind = olderThanMs;
          return delivered;
        }
        delivered++;
        this.enqueue(row.seq, row.payload as RelayEvent, row.receivedAt.getTime(), false);
      }
      if (rows.length < SWEEP_BATCH) return delivered;
    }
  }

  /**
   * Sends `resume` to the conversations owing a throttled sender an answer for longer than the
   * quiet time after which a live one answers, plus `olderThanMs`: they lost the timer that
   * answers (a restart, a takeover; XState does not set a restored state's timers), and
   * `resume` sets it again. One whose timer runs (live here in `owing`, or elsewhere) ignores it.
   */
  async resumeOwed(olderThanMs: number): Promise<number> {
    const keys = await this.deps.owing(olderThanMs + this.deps.burstQuietMs, SWEEP_BATCH);
    let resumed = 0;
    for (const key of keys) {
      if (this.deps.host.peek(CONVERSATION, key)?.value === 'owing') continue;
      resumed++;
      this.deps.host.post(CONVERSATION, key, { type: 'resume' }, (err) =>
        this.deps.log.warn({ err }, 'could not resume a conversation owing an answer; the next sweep tries again'),
      );
    }
    return resumed;
  }

  private runSweep(age: number): void {
    if (this.sweeping || this.stopped) return;
    this.sweeping = this.sweep(age)
      .then(
        (n) =>
          n &&
          this.deps.log.info(
            { delivered: n, ...(this.sweepBehind !== null ? { behind: true } : {}) },
            this.sweepBehind !== null
              ? 'unprocessed relay events found: the backlog is full, the rest follow as it drains'
              : 'delivered unprocessed relay events',
          ),
        (err) => this.deps.log.warn({ err }, 'inbox sweep failed'),
      )
      .then(() => this.resumeOwed(age))
      .then(
        (n) => n && this.deps.log.info({ conversations: n }, 'resumed conversations owing an answer'),
        (err) => this.deps.log.warn({ err }, 'sweep of conversations owing an answer failed'),
      )
      .finally(() => {
        this.sweeping = null;
      });
  }

  start(): void {
    this.runSweep(0);
    const every = this.deps.sweepEveryMs;
    this.sweeper = setInterval(() => {
      // While events wait for the window, the old pending rows are mostly those: a sweep would
      // read the whole backlog back to find the few lost ones, which can wait until it is gone.
      if (this.waitingSeqs.size === 0) this.runSweep(every * SWEEP_AGE_FACTOR);
    }, every);
    this.sweeper.unref();
    this.loop = performance.eventLoopUtilization();
    this.share = setInterval(() => {
      const loop = performance.eventLoopUtilization();
      const limit = nextWindow({
        limit: this.limit,
        max: this.deps.window,
        storeMs: this.requests ? this.storeMs / this.requests : 0,
        busy: performance.eventLoopUtilization(loop, this.loop).utilization,
        requests: this.requests,
        waiting: this.waitingSeqs.size,
      });
      this.loop = loop;
      this.requests = 0;
      this.storeMs = 0;
      if (limit > this.limit) this.schedulePump();
      this.limit = limit;
    }, SHARE_EVERY_MS);
    this.share.unref();
  }

  /** No sweep starts after this, and waiting events stay in the inbox (the next start delivers them). */
  stop(): void {
    this.stopped = true;
    clearInterval(this.sweeper);
    clearInterval(this.share);
  }
}
