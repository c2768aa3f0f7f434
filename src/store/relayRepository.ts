/** The relay's inbox (idempotent ingest) and outbox (ordered, acknowledged delivery). */
import type { SendFrame } from '../../actors/conversation.machine.ts';
import type { BatchWriter } from './GroupCommitter.ts';
import { type Pool, query } from './pool.ts';

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

export const relayQueries = {
  pendingInbox: `SELECT seq, conversation_key, payload, received_at FROM relay_inbox
                  WHERE status = 'pending' AND seq > $1 AND received_at < $2 ORDER BY seq LIMIT $3`,
  pendingOutbox: `SELECT seq, payload FROM relay_outbox WHERE status = 'pending' AND seq > $1 ORDER BY seq LIMIT $2`,
} as const;

export class RelayRepository {
  constructor(private readonly pool: Pool) {}

  /** Stores new events (a seen event id is a duplicate); results in item order. */
  readonly writeInbox: BatchWriter<InboxItem> = async (client, items) => {
    const { rows } = await client.query<{ event_id: string; seq: string }>(
      `INSERT INTO relay_inbox (event_id, conversation_key, payload)
       SELECT r.event_id, r.conversation_key, r.payload
         FROM jsonb_to_recordset($1::jsonb) AS r(event_id text, conversation_key text, payload jsonb)
       ON CONFLICT (event_id) DO NOTHING
       RETURNING event_id, seq`,
      [
        JSON.stringify(
          items.map((i) => ({ event_id: i.eventId, conversation_key: i.conversationKey, payload: i.payload })),
        ),
      ],
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
    await client.query(
      "UPDATE relay_outbox SET status = 'acked', acked_at = now() WHERE id = ANY($1::text[]) AND status = 'pending'",
      [ids],
    );
  };

  /** Unprocessed inbox rows received before `before`, in order, after `afterSeq`. */
  async pendingInbox(afterSeq: number, before: Date, limit: number): Promise<PendingInbox[]> {
    const { rows } = await query<{ seq: string; conversation_key: string; payload: unknown; received_at: Date }>(
      this.pool,
      relayQueries.pendingInbox,
      [afterSeq, before, limit],
      { idempotent: true },
    );
    return rows.map((r) => ({
      seq: Number(r.seq),
      conversationKey: r.conversation_key,
      payload: r.payload,
      receivedAt: r.received_at,
    }));
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
}
