/**
 * Durable, exactly-once ingest: events are validated one by one, stored in `relay_inbox`
 * (through the group commit; a seen event id is a duplicate), acknowledged only once stored,
 * and then handed to their conversation's actor. Rows not yet processed are delivered again
 * by a sweep (after a restart, or when an actor failed), one sweep at a time; a row delivered
 * twice is processed once, because the conversation's commit only applies while its row is
 * still pending. A conversation that stops while working on a row counts a failed attempt
 * against that row: it waits RELAY_RETRY_BACKOFF_MS × 2^(attempts − 1) before the sweep
 * delivers it again, and is `failed` after RELAY_MAX_ATTEMPTS (listed and retried by admins).
 */
import type { Inbound, InboundMessage } from '../../actors/conversationTypes.ts';
import { CONVERSATION } from '../conversation/createConversationKind.ts';
import { type ErrorCode, isAppError } from '../errors.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import type { RateLimiter } from '../limits/RateLimiter.ts';
import { withContext } from '../observability/context.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { GroupCommitter } from '../store/GroupCommitter.ts';
import type { FailedInbox, InboxItem, InboxResult, RelayRepository } from '../store/relayRepository.ts';
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
}

/**
 * A periodic sweep delivers rows pending for 1.5 sweep intervals: younger ones are most likely
 * still on their way through their conversation.
 */
const SWEEP_AGE_FACTOR = 1.5;
const SWEEP_BATCH = 500;

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

export class RelayIngest {
  /** Inbox rows handed to an actor and not yet processed: seq → conversation key. */
  private readonly inFlight = new Map<number, string>();
  private sweeper: NodeJS.Timeout | undefined;
  /** The sweep running, if any: sweeps never overlap (a slow one is not joined by the next). */
  private sweeping: Promise<unknown> | null = null;

  constructor(private readonly deps: RelayIngestDeps) {
    deps.committer.register<InboxItem>(INBOX, deps.repo.writeInbox);
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
    const receivedAt = Date.now();
    const stored = await Promise.all(
      valid.map(({ event }) =>
        this.deps.committer.submit<InboxItem, InboxResult>(INBOX, null, 0, {
          eventId: event.id,
          conversationKey: conversationKeyOf(event),
          payload: event,
        }),
      ),
    );
    valid.forEach(({ event }, i) => {
      const row = stored[i];
      if (row) {
        result.accepted.push(event.id);
        void this.deliver(row.seq, event, receivedAt, true);
      } else {
        result.duplicates.push(event.id);
      }
    });
    const m = this.deps.metrics.relayEvents;
    m.inc({ outcome: 'accepted' }, result.accepted.length);
    m.inc({ outcome: 'duplicate' }, result.duplicates.length);
    m.inc({ outcome: 'rejected' }, result.rejected.length);
    return result;
  }

  /** Hands a stored event to its conversation. */
  private async deliver(seq: number, event: RelayEvent, receivedAt: number, live: boolean): Promise<void> {
    const key = conversationKeyOf(event);
    this.inFlight.set(seq, key);
    // Only live traffic counts against a sender: recovered rows are old news.
    const throttled = live && (await this.deps.senders.take(event.sender)) > 0;
    const message: Inbound = { type: 'inbound', seq, message: toInbound(event, receivedAt), throttled };
    try {
      // The event id is the correlation id of everything done for it, end to end.
      await withContext({ reqId: event.id }, () => this.deps.host.send(CONVERSATION, key, message));
      // In a cluster the conversation may run on another process, whose commit (or failure)
      // is never heard here: the row is that process's to track, and a sweep's if it is lost.
      if (!this.deps.host.has(CONVERSATION, key)) this.inFlight.delete(seq);
    } catch (err) {
      this.inFlight.delete(seq);
      const level = isAppError(err) && err.code === 'shutting_down' ? 'debug' : 'warn';
      this.deps.log[level]({ err, event: event.id }, 'could not hand an event to its conversation; it will be retried');
    }
  }

  /** The row was processed (committed with its conversation's changes). */
  processed(seq: number): void {
    this.inFlight.delete(seq);
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
      this.inFlight.delete(seq);
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
          { seq, attempts: row.attempts },
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
    void this.deliver(row.seq, row.payload as RelayEvent, row.receivedAt.getTime(), false);
    return true;
  }

  /** Delivers unprocessed rows (all of them at start, then the stale ones periodically). */
  async sweep(olderThanMs: number): Promise<number> {
    let after = 0;
    let delivered = 0;
    for (;;) {
      const rows = await this.deps.repo.pendingInbox(after, new Date(Date.now() - olderThanMs), SWEEP_BATCH);
      for (const row of rows) {
        after = row.seq;
        if (this.inFlight.has(row.seq)) continue;
        delivered++;
        await this.deliver(row.seq, row.payload as RelayEvent, row.receivedAt.getTime(), false);
      }
      if (rows.length < SWEEP_BATCH) return delivered;
    }
  }

  start(): void {
    const run = (age: number) => {
      if (this.sweeping) return;
      this.sweeping = this.sweep(age)
        .then(
          (n) => n && this.deps.log.info({ delivered: n }, 'delivered unprocessed relay events'),
          (err) => this.deps.log.warn({ err }, 'inbox sweep failed'),
        )
        .finally(() => {
          this.sweeping = null;
        });
    };
    run(0);
    const every = this.deps.sweepEveryMs;
    this.sweeper = setInterval(() => run(every * SWEEP_AGE_FACTOR), every);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
  }
}
