/**
 * Conversations in PostgreSQL: the group-commit writer of everything one processed message
 * changes, and the reads the conversation actor and the history endpoint need.
 */
import type { ConversationCommit, MessageRow } from '../../actors/conversation.machine.ts';
import { STAGES } from '../../actors/conversationRules.ts';
import { containerTagOf } from '../memory/containerTag.ts';
import type { BatchWriter } from './GroupCommitter.ts';
import { type Pool, query } from './pool.ts';

/** A commit and the actor snapshot to store with it. */
export interface ConversationWrite {
  commit: ConversationCommit;
  snapshot: unknown;
}

export interface StoredMessage {
  id: string;
  sender: string;
  direction: 'in' | 'out';
  text: string;
  attachments: { id: string; mime: string; description?: string }[];
  createdAt: string;
}

export const conversationQueries = {
  snapshot: 'SELECT snapshot FROM conversations WHERE key = $1',
  exists: 'SELECT 1 FROM conversations WHERE key = $1',
  /** Newest first: the history endpoint and the prompt's recent turns. */
  page: `SELECT id, sender, direction, text, attachments, created_at FROM messages
          WHERE conversation_key = $1 AND created_at < $2 ORDER BY created_at DESC LIMIT $3`,
  stage: 'SELECT stage FROM relationship_state WHERE user_id = $1 AND persona_id = $2',
} as const;

/** `stage` of a counters expression, in SQL, from the same thresholds as `stageOf`. */
const stageSql = (counters: string) =>
  `CASE ${STAGES.map(([n, stage]) => `WHEN (${counters}->>'messages')::int >= ${n} THEN '${stage}'`).join(' ')} ELSE 'new' END`;

interface MessageRecord {
  id: string;
  conversation_key: string;
  sender: string;
  direction: string;
  text: string;
  attachments: unknown;
  created_at: string;
}

const toRecord = (key: string, m: MessageRow): MessageRecord => ({
  id: m.id,
  conversation_key: key,
  sender: m.sender,
  direction: m.direction,
  text: m.text,
  attachments: m.attachments,
  created_at: new Date(m.at).toISOString(),
});

export class ConversationRepository {
  constructor(private readonly pool: Pool) {}

  async snapshot(key: string): Promise<unknown | null> {
    const { rows } = await query<{ snapshot: unknown }>(this.pool, conversationQueries.snapshot, [key], {
      idempotent: true,
    });
    return rows.length ? rows[0].snapshot : null;
  }

  async exists(key: string): Promise<boolean> {
    return (await query(this.pool, conversationQueries.exists, [key], { idempotent: true })).rowCount === 1;
  }

  /** Messages before `before`, newest first. */
  async page(key: string, before: Date, limit: number): Promise<StoredMessage[]> {
    const { rows } = await query<MessageRecord>(
      this.pool,
      conversationQueries.page,
      [key, before.toISOString(), limit],
      {
        idempotent: true,
      },
    );
    return rows.map((r) => ({
      id: r.id,
      sender: r.sender,
      direction: r.direction as 'in' | 'out',
      text: r.text ?? '',
      attachments: r.attachments as StoredMessage['attachments'],
      createdAt: new Date(r.created_at).toISOString(),
    }));
  }

  async stage(userId: string, persona: string): Promise<string> {
    const { rows } = await query<{ stage: string }>(this.pool, conversationQueries.stage, [userId, persona], {
      idempotent: true,
    });
    return rows[0]?.stage ?? 'new';
  }

  /** The group commit's writer. Idempotent: a retried transaction changes nothing twice. */
  readonly writeBatch: BatchWriter<ConversationWrite> = async (client, items) => {
    const conversations = items.map(({ commit: c, snapshot }) => ({
      key: c.key,
      kind: c.kind,
      persona: c.persona,
      chat_guid: c.chatGuid,
      version: c.version,
      snapshot,
    }));
    // Only a newer version changes a conversation, so a retried batch is a no-op; the other
    // statements of a commit are skipped the same way (ON CONFLICT, status checks).
    const { rows: fresh } = await client.query<{ key: string }>(
      `INSERT INTO conversations (key, kind, persona, chat_guid, version, snapshot)
       SELECT r.key, r.kind, r.persona, r.chat_guid, r.version, r.snapshot
         FROM jsonb_to_recordset($1::jsonb) AS r(key text, kind text, persona text, chat_guid text, version bigint, snapshot jsonb)
       ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, snapshot = EXCLUDED.snapshot,
              chat_guid = EXCLUDED.chat_guid, updated_at = now()
        WHERE conversations.version < EXCLUDED.version
       RETURNING key`,
      [JSON.stringify(conversations)],
    );
    const applied = new Set(fresh.map((r) => r.key));
    const commits = items.map((i) => i.commit).filter((c) => applied.has(c.key));
    if (!commits.length) return;

    const messages = commits.flatMap((c) =>
      [c.inbound, c.outbound].filter((m): m is MessageRow => m !== null).map((m) => toRecord(c.key, m)),
    );
    if (messages.length) {
      await client.query(
        `INSERT INTO messages (id, conversation_key, sender, direction, text, attachments, created_at)
         SELECT r.id, r.conversation_key, r.sender, r.direction, r.text, r.attachments, r.created_at
           FROM jsonb_to_recordset($1::jsonb)
             AS r(id text, conversation_key text, sender text, direction text, text text, attachments jsonb, created_at timestamptz)
         ON CONFLICT (id) DO NOTHING`,
        [JSON.stringify(messages)],
      );
    }
    for (const c of commits.filter((c) => c.forget)) {
      // The latest memory of this container only; the message it came from is blanked too.
      await client.query(
        `WITH gone AS (
           DELETE FROM memories WHERE id = (
             SELECT id FROM memories WHERE container_tag = $1 ORDER BY created_at DESC, id DESC LIMIT 1)
           RETURNING source_message_id)
         UPDATE messages SET text = '', attachments = '[]'::jsonb
          WHERE id IN (SELECT source_message_id FROM gone) AND conversation_key = $1`,
        [containerTagOf(c)],
      );
    }
    const memories = commits.flatMap((c) =>
      c.memories.map((m) => ({
        container_tag: containerTagOf(c),
        content: m.content,
        source_message_id: m.sourceMessageId,
      })),
    );
    if (memories.length) {
      await client.query(
        `INSERT INTO memories (container_tag, content, source_message_id)
         SELECT r.container_tag, r.content, r.source_message_id
           FROM jsonb_to_recordset($1::jsonb) AS r(container_tag text, content text, source_message_id text)`,
        [JSON.stringify(memories)],
      );
    }
    const deltas = new Map<
      string,
      { user_id: string; persona_id: string; messages: number; replies: number; photos: number }
    >();
    for (const c of commits) {
      const r = c.relationship;
      const k = `${r.userId}\u0000${r.persona}`;
      const d = deltas.get(k) ?? { user_id: r.userId, persona_id: r.persona, messages: 0, replies: 0, photos: 0 };
      d.messages += r.delta.messages;
      d.replies += r.delta.replies;
      d.photos += r.delta.photos;
      deltas.set(k, d);
    }
    // Counters are added in the UPDATE itself, so concurrent writers (cluster mode) never lose one.
    const merged = `jsonb_build_object(
        'messages', (relationship_state.counters->>'messages')::int + (EXCLUDED.counters->>'messages')::int,
        'replies', (relationship_state.counters->>'replies')::int + (EXCLUDED.counters->>'replies')::int,
        'photos', (relationship_state.counters->>'photos')::int + (EXCLUDED.counters->>'photos')::int)`;
    await client.query(
      `INSERT INTO relationship_state (user_id, persona_id, counters, stage, last_interaction_at)
       SELECT r.user_id, r.persona_id, r.c, ${stageSql('r.c')}, now()
         FROM jsonb_to_recordset($1::jsonb) AS r(user_id text, persona_id text, c jsonb)
       ON CONFLICT (user_id, persona_id) DO UPDATE
         SET counters = ${merged}, stage = ${stageSql(merged)}, last_interaction_at = now()`,
      [
        JSON.stringify(
          [...deltas.values()].map((d) => ({
            user_id: d.user_id,
            persona_id: d.persona_id,
            c: { messages: d.messages, replies: d.replies, photos: d.photos },
          })),
        ),
      ],
    );
    const sends = commits.flatMap((c) =>
      c.send ? [{ id: c.send.id, chat: c.send.chat.guid, conversation_key: c.key, payload: c.send }] : [],
    );
    if (sends.length) {
      await client.query(
        `INSERT INTO relay_outbox (id, chat, conversation_key, payload)
         SELECT r.id, r.chat, r.conversation_key, r.payload
           FROM jsonb_to_recordset($1::jsonb) AS r(id text, chat text, conversation_key text, payload jsonb)
         ON CONFLICT (id) DO NOTHING`,
        [JSON.stringify(sends)],
      );
    }
    const seqs = commits.map((c) => c.inboxSeq).filter((s): s is number => s !== null);
    if (seqs.length) {
      await client.query(
        `UPDATE relay_inbox SET status = 'processed', processed_at = now() WHERE seq = ANY($1::bigint[]) AND status = 'pending'`,
        [seqs],
      );
    }
  };
}
