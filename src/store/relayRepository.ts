/**
 * The relay's inbox (idempotent ingest; attempts, backoff and `failed` for events that keep
 * failing) and outbox (ordered, acknowledged delivery), and their retention.
 */
import type { SendFrame } from '../../actors/conversationTypes.ts';
import type { BatchWriter } from './GroupCommitter.ts';
import { type Pool, prepared, query, run } from './pool.ts';

export interface InboxItem {
  eventId: string;
  conversationKey: string;
  payload: unknown;
}

/** The inbox row's sequence number, or null when the event id was seen before. */
export type InboxResult = { seq: number } | null;

export interface PendingInbox {
  seq: number;
  conversationKey: string;
  payload: unknown;
  receivedAt: Date;
}

/** A failed event, as the admin routes list it. */
export interface FailedInbox {
  id: string;
  conversationKey: string;
  attempts: number;
  lastError: string | null;
  receivedAt: string;
  failedAt: string | null;
  seq: number;
}

/** Retention of processed events' payloads and acknowledged sends. */
export interface RetentionCutoffs {
  /** Processed before this: attachment data removed. */
  attachments: Date;
  /** Processed before this: the whole payload removed (its id and type stay, as the idempotency key). */
  payloads: Date;
  /** Acknowledged before this: outbox row deleted. */
  acked: Date;
}

/** Rows changed per retention statement, so none holds locks for long. */
const RETENTION_BATCH = 5000;

export const relayQueries = {
  /**
   * Acknowledged sends $1, found by primary key. "Not acknowledged" rather than "pending": the
   * partial index of pending rows is then no candidate (with stale statistics the planner read
   * every pending row through it, once per batch of acks, while a backlog waited).
   */
  ack: "UPDATE relay_outbox SET status = 'acked', acked_at = now() WHERE id = ANY($1::text[]) AND status <> 'acked'",
  pendingInbox: `SELECT seq, conversation_key, payload, received_at FROM relay_inbox
                  WHERE status = 'pending' AND seq > $1 AND received_at < $2
                    AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                  ORDER BY seq LIMIT $3`,
  pendingBySeq: `SELECT seq, conversation_key, payload, received_at FROM relay_inbox
                  WHERE seq = ANY($1::bigint[]) AND status = 'pending'`,
  pendingOutbox: `SELECT seq, payload FROM relay_outbox WHERE status = 'pending' AND seq > $1 ORDER BY seq LIMIT $2`,
  /** One failed attempt: backoff of base × 2^(attempts − 1), `failed` once attempts reach the limit. */
  attemptFailed: `UPDATE relay_inbox
                     SET attempts = attempts + 1, last_error = $4,
                         status = CASE WHEN attempts + 1 >= $2 THEN 'failed' ELSE 'pending' END,
                         processed_at = CASE WHEN attempts + 1 >= $2 THEN now() ELSE processed_at END,
                         next_attempt_at = now() + make_interval(secs => $3::float8 / 1000 * 2 ^ least(attempts, 20))
                   WHERE seq = $1 AND status = 'pending'
               RETURNING status, attempts, event_id`,
  failed: `SELECT seq, event_id, conversation_key, attempts, last_error, received_at, processed_at FROM relay_inbox
            WHERE status = 'failed' AND seq > $1 ORDER BY seq LIMIT $2`,
  retry: `UPDATE relay_inbox SET status = 'pending', attempts = 0, next_attempt_at = NULL, last_error = NULL,
                 processed_at = NULL
           WHERE event_id = $1 AND status = 'failed'
       RETURNING seq, conversation_key, payload, received_at`,
  stripPayloads: `UPDATE relay_inbox SET payload = jsonb_build_object('id', payload->'id', 'type', payload->'type'), stripped = 2
                   WHERE seq IN (SELECT seq FROM relay_inbox
                                  WHERE status = 'processed' AND stripped < 2 AND processed_at < $1 LIMIT $2)`,
  stripAttachments: `UPDATE relay_inbox
                        SET payload = CASE WHEN jsonb_typeof(payload->'attachments') = 'array'
                              THEN jsonb_set(payload, '{attachments}', coalesce(
                                (SELECT jsonb_agg(a - 'data') FROM jsonb_array_elements(payload->'attachments') a), '[]'))
                              ELSE payload END,
                            stripped = 1
                      WHERE seq IN (SELECT seq FROM relay_inbox
                                     WHERE status = 'processed' AND stripped < 1 AND processed_at < $1 LIMIT $2)`,
  pruneOutbox: `DELETE FROM relay_outbox
                 WHERE id IN (SELECT id FROM relay_outbox WHERE status = 'acked' AND acked_at < $1 LIMIT $2)`,
} as const;

/** An inbox row as the pending-row queries return it. */
interface InboxRow {
  seq: string;
  conversation_key: string;
  payload: unknown;
  received_at: Date;
}

const pendingOf = (r: InboxRow): PendingInbox => ({
  seq: Number(r.seq),
  conversationKey: r.conversation_key,
  payload: r.payload,
  receivedAt: r.received_at,
});

/** What every relay event or acknowledgement runs, prepared on each connection (`prepared`). */
const statements = {
  insertInbox: prepared(
    'relay_insert_inbox',
    `INSERT INTO relay_inbox (event_id, conversation_key, payload)
     SELECT r.event_id, r.conversation_key, r.payload
       FROM jsonb_to_recordset($1::jsonb) AS r(event_id text, conversation_key text, payload jsonb)
     ON CONFLICT (event_id) DO NOTHING
     RETURNING event_id, seq`,
  ),
  ack: prepared('relay_ack', relayQueries.ack),
  pendingBySeq: prepared('relay_pending_by_seq', relayQueries.pendingBySeq),
};

export class RelayRepository {
  constructor(private readonly pool: Pool) {}

  /** Stores new events (a seen event id is a duplicate); results in item order. */
  readonly writeInbox: BatchWriter<InboxItem> = async (client, items) => {
    const { rows } = await client.query<{ event_id: string; seq: string }>(
      run(statements.insertInbox, [
        JSON.stringify(
          items.map((i) => ({ event_id: i.eventId, conversation_key: i.conversationKey, payload: i.payload })),
        ),
      ]),
    );
    const inserted = new Map(rows.map((r) => [r.event_id, Number(r.seq)]));
    // The same id twice in one batch: the first is stored, the second is its duplicate.
    return items.map((i): InboxResult => {
      const seq = inserted.get(i.eventId);
      if (seq === undefined) return null;
      inserted.delete(i.eventId);
      return { seq };
    });
  };

  /** Marks sends acknowledged by the relay. */
  readonly writeAcks: BatchWriter<string> = async (client, ids) => {
    await client.query(run(statements.ack, [ids]));
  };

  /** Unprocessed inbox rows received before `before`, in order, after `afterSeq`. */
  async pendingInbox(afterSeq: number, before: Date, limit: number): Promise<PendingInbox[]> {
    const { rows } = await query<InboxRow>(this.pool, relayQueries.pendingInbox, [afterSeq, before, limit], {
      idempotent: true,
    });
    return rows.map(pendingOf);
  }

  /** The rows of `seqs` that are still pending, in no particular order. */
  async pendingBySeq(seqs: number[]): Promise<PendingInbox[]> {
    const { rows } = await query<InboxRow>(this.pool, statements.pendingBySeq, [seqs], { idempotent: true });
    return rows.map(pendingOf);
  }

  /** Unacknowledged sends after `afterSeq`, in delivery order. */
  async pendingOutbox(afterSeq: number, limit: number): Promise<{ seq: number; frame: SendFrame }[]> {
    const { rows } = await query<{ seq: string; payload: SendFrame }>(
      this.pool,
      relayQueries.pendingOutbox,
      [afterSeq, limit],
      {
        idempotent: true,
      },
    );
    return rows.map((r) => ({ seq: Number(r.seq), frame: r.payload }));
  }

  /**
   * Records a failed attempt at processing inbox row `seq` (still pending): it is not delivered
   * again for `backoffMs` × 2^(attempts − 1), and is `failed` once `maxAttempts` failed.
   * Null when the row is no longer pending.
   */
  async attemptFailed(
    seq: number,
    maxAttempts: number,
    backoffMs: number,
    error: string,
  ): Promise<{ status: 'pending' | 'failed'; attempts: number; eventId: string } | null> {
    const { rows } = await query<{ status: 'pending' | 'failed'; attempts: number; event_id: string }>(
      this.pool,
      relayQueries.attemptFailed,
      [seq, maxAttempts, backoffMs, error.slice(0, 500)],
    );
    const row = rows[0];
    return row ? { status: row.status, attempts: row.attempts, eventId: row.event_id } : null;
  }

  /** Failed events after `afterSeq`, oldest first. */
  async failed(afterSeq: number, limit: number): Promise<FailedInbox[]> {
    const { rows } = await query<{
      seq: string;
      event_id: string;
      conversation_key: string;
      attempts: number;
      last_error: string | null;
      received_at: Date;
      processed_at: Date | null;
    }>(this.pool, relayQueries.failed, [afterSeq, limit], { idempotent: true });
    return rows.map((r) => ({
      id: r.event_id,
      conversationKey: r.conversation_key,
      attempts: r.attempts,
      lastError: r.last_error,
      receivedAt: r.received_at.toISOString(),
      failedAt: r.processed_at?.toISOString() ?? null,
      seq: Number(r.seq),
    }));
  }

  /** Sets failed event `eventId` pending again with its attempts reset; null when no such failed event. */
  async retry(eventId: string): Promise<PendingInbox | null> {
    const { rows } = await query<InboxRow>(this.pool, relayQueries.retry, [eventId]);
    return rows.length ? pendingOf(rows[0]) : null;
  }

  /** Applies retention (in batches); returns how many inbox rows were stripped and outbox rows deleted. */
  async applyRetention(cutoffs: RetentionCutoffs): Promise<{ stripped: number; pruned: number }> {
    const drain = async (sql: string, cutoff: Date) => {
      let total = 0;
      for (;;) {
        const n = (await query(this.pool, sql, [cutoff, RETENTION_BATCH])).rowCount ?? 0;
        total += n;
        if (n < RETENTION_BATCH) return total;
      }
    };
    // Whole payloads first: rows old enough for both need no attachment pass.
    const stripped =
      (await drain(relayQueries.stripPayloads, cutoffs.payloads)) +
      (await drain(relayQueries.stripAttachments, cutoffs.attachments));
    const pruned = await drain(relayQueries.pruneOutbox, cutoffs.acked);
    return { stripped, pruned };
  }
}
