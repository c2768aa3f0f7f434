/**
 * Conversations in PostgreSQL: the group-commit writer of everything one processed message
 * changes, and the reads the conversation actor and the history endpoint need.
 */

import { FORGOTTEN_REPLY, SAFETY_REPLIES, STAGES } from '../../actors/conversationRules.ts';
import type { ConversationCommit, MessageRow } from '../../actors/conversationTypes.ts';
import { containerTagOf } from '../memory/containerTag.ts';
import { BatchedReads } from './BatchedReads.ts';
import { type BatchWriter, FENCED, heldLeases } from './GroupCommitter.ts';
import { type Pool, prepared, query, run } from './pool.ts';

/**
 * A commit and the actor snapshot stored with it, as the group commit carries them: each row
 * it adds to the batch statement's six JSON arrays already serialized (`encodeWrite`), so a
 * commit is turned into JSON once, not once to be sized and again to be written.
 */
export interface ConversationWrite {
  key: string;
  /** Its memory container, when it asks to forget the latest remembered message. */
  forget: string | null;
  rows: {
    conversation: string;
    messages: string[];
    memories: string[];
    /** One per message: the statement sums them per person. */
    relationships: string[];
    sends: string[];
  };
  /** The inbox rows it processes (none for a catch-up answer). */
  seqs: number[];
  /** The rows' JSON size in bytes (GROUP_COMMIT_MAX_BYTES). */
  bytes: number;
}

/** A stored message as the conversation's actor reads it for the model: not when it was sent (the turns come in order). */
export interface Turn {
  id: string;
  sender: string;
  direction: 'in' | 'out';
  text: string;
  attachments: { id: string; mime: string; description?: string }[];
}

/** SQL for `ts` (timestamptz) as `Date.prototype.toISOString` writes it. */
const isoTime = (ts: string) => `to_char(${ts} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

export const conversationQueries = {
  snapshot: 'SELECT snapshot FROM conversations WHERE key = $1',
  /**
   * The history endpoint's whole answer for conversation $1 — its messages before $2, newest
   * first, at most $3, and the cursor of the next page — as JSON text, built by PostgreSQL in
   * one round trip; no row when there is no such conversation. The page is read through
   * `messages_conversation_created_idx`; timestamps are written as JavaScript writes them
   * (UTC, milliseconds), so a page's `next` is a valid `before`.
   */
  page: `SELECT json_build_object(
                  'messages', coalesce(json_agg(json_build_object(
                    'id', m.id, 'sender', m.sender, 'direction', m.direction, 'text', coalesce(m.text, ''),
                    'attachments', m.attachments, 'createdAt', ${isoTime('m.created_at')}) ORDER BY m.created_at DESC)
                    FILTER (WHERE m.id IS NOT NULL), '[]'),
                  'next', CASE WHEN count(m.id) = $3 THEN ${isoTime('min(m.created_at)')} END)::text AS body
            FROM conversations c
            LEFT JOIN LATERAL (
              SELECT id, sender, direction, text, attachments, created_at FROM messages
               WHERE conversation_key = c.key AND created_at < $2 ORDER BY created_at DESC LIMIT $3) m ON true
           WHERE c.key = $1
           GROUP BY c.key`,
  /**
   * What answering a message needs, for several conversations in one round trip: per request
   * (conversation $1[n], limit $2[n], sender $3[n], persona $4[n]) its latest messages and the
   * sender's stage, one row per request in request order.
   */
  turns: `SELECT q.n,
                 (SELECT coalesce(json_agg(json_build_object('id', m.id, 'sender', m.sender, 'direction', m.direction,
                                                             'text', m.text, 'attachments', m.attachments)
                                           ORDER BY m.created_at DESC), '[]'::json) FROM (
                    SELECT id, sender, direction, text, attachments, created_at FROM messages
                     WHERE conversation_key = q.key ORDER BY created_at DESC LIMIT q.lim) m) AS messages,
                 (SELECT stage FROM relationship_state WHERE user_id = q.user_id AND persona_id = q.persona) AS stage
            FROM unnest($1::text[], $2::int[], $3::text[], $4::text[]) WITH ORDINALITY AS q(key, lim, user_id, persona, n)
           ORDER BY q.n`,
  /**
   * Conversations whose last commit left them owing a throttled sender an answer more than $1
   * milliseconds ago, longest first, at most $2: their timer was lost (a restart, a takeover),
   * since a live one answers after BURST_QUIET_MS. Through `conversations_owing_idx`.
   */
  owing: `SELECT key FROM conversations WHERE owing_since < now() - make_interval(secs => $1 / 1000.0)
           ORDER BY owing_since LIMIT $2`,
  /**
   * "forget that": the latest remembered message of the container ($1, also the conversation
   * key) loses every memory it yielded, its text and attachments in `messages` and its raw
   * event in `relay_inbox`. Sage's replies from that message on (the answer to it included, also
   * a burst's catch-up) were written with it in view — its text in the recent turns, its memories
   * among the latest — so each is replaced by $2, in `messages` and in `relay_outbox`; the fixed
   * replies ($3: safety, fallback, forget) carry nothing of it and are kept.
   */
  forget: `WITH target AS (
             SELECT m.id, m.created_at, substr(m.id, 4) AS event_id FROM messages m
              WHERE m.conversation_key = $1 AND m.id = (
                SELECT source_message_id FROM memories WHERE container_tag = $1
                 ORDER BY created_at DESC, id DESC LIMIT 1)),
           gone AS (
             DELETE FROM memories WHERE container_tag = $1 AND source_message_id IN (SELECT id FROM target)),
           blanked AS (
             UPDATE messages SET text = '', attachments = '[]'::jsonb WHERE id IN (SELECT id FROM target)),
           replies AS (
             UPDATE messages r SET text = $2 FROM target t
              WHERE r.conversation_key = $1 AND r.direction = 'out' AND r.text <> ALL($3::text[])
                AND (r.created_at >= t.created_at OR r.id IN ('out_' || t.event_id, 'out_' || t.event_id || '_burst'))
             RETURNING r.id),
           sent AS (
             UPDATE relay_outbox o SET payload = jsonb_set(o.payload, '{text}', to_jsonb($2::text))
              WHERE o.id IN (SELECT id FROM replies)),
           inbox AS (
             UPDATE relay_inbox i SET payload = i.payload - 'text' - 'attachments'
               FROM target t WHERE i.event_id = t.event_id)
         SELECT count(*) AS forgotten FROM target`,
  /**
   * A photo seen after its message was committed (past PHOTO_WAIT_MS): its description ($3)
   * replaces the placeholder ($4) in message $1's attachment $2, and becomes a memory of
   * container $5 dated like the message, so "forget that" still finds the latest message
   * first. Nothing happens when the placeholder is gone (the message was forgotten). A container
   * holding that description already keeps one memory of it, dated by the later message (sql/008).
   */
  latePhoto: `WITH m AS (
                UPDATE messages SET attachments = (
                  SELECT jsonb_agg(CASE WHEN a->>'id' = $2 THEN a || jsonb_build_object('description', $3::text) ELSE a END
                                   ORDER BY n)
                    FROM jsonb_array_elements(attachments) WITH ORDINALITY AS x(a, n))
                 WHERE id = $1 AND attachments @> jsonb_build_array(jsonb_build_object('id', $2::text, 'description', $4::text))
                RETURNING id, sender, created_at)
              INSERT INTO memories (container_tag, content, source_message_id, created_at)
              SELECT $5, m.sender || ' shared a photo: ' || $3, m.id, m.created_at FROM m
              ON CONFLICT (container_tag, md5(content)) DO UPDATE
                SET id = EXCLUDED.id, source_message_id = EXCLUDED.source_message_id, created_at = EXCLUDED.created_at
                WHERE memories.created_at < EXCLUDED.created_at`,
} as const;

/** Replies of Sage's that never quote anything (kept when a message is forgotten). */
const FIXED_REPLIES = [...Object.values(SAFETY_REPLIES), FORGOTTEN_REPLY];

/** `stage` of a counters expression, in SQL, from the same thresholds as `stageOf`. */
const stageSql = (counters: string) =>
  `CASE ${STAGES.map(([n, stage]) => `WHEN (${counters}->>'messages')::int >= ${n} THEN '${stage}'`).join(' ')} ELSE 'new' END`;

// Counters are added in the UPDATE itself, so concurrent writers (cluster mode) never lose one.
const merged = `jsonb_build_object(
      'messages', (relationship_state.counters->>'messages')::int + (EXCLUDED.counters->>'messages')::int,
      'replies', (relationship_state.counters->>'replies')::int + (EXCLUDED.counters->>'replies')::int,
      'photos', (relationship_state.counters->>'photos')::int + (EXCLUDED.counters->>'photos')::int)`;

/**
 * Everything of a batch of commits in one statement ($1 conversations, $2 messages, $3 memories,
 * $4 relationship deltas, $5 sends, each a JSON array; $6 / $7 the conversation and seq of each
 * inbox row processed); see `writeBatch`. A conversation is written (and with it everything else
 * of its commit) only while every inbox row its commit processes is pending: a batch of its
 * messages is written whole or not at all. Inbox rows are reached by their primary key from
 * arrays, whose length the planner knows, and "pending" is written as "neither processed nor
 * failed" so the partial index of pending rows is no candidate: with a JSON list of unknown
 * length and stale statistics, the planner read every pending row instead, once per commit,
 * while a backlog waited (a third of the speed in some benchmark runs).
 *
 * A memory its container already holds (the same content) is not stored again: the one stored
 * moves to the message that said it last, with the id and date a new one would have had (sql/008).
 * Of one content said several times in a batch, the last is kept, and memories are numbered in
 * the order of the messages that yield them, so "the latest remembered message" stays exact.
 *
 * `fenced`: the statement fences itself, for a batch committed without a transaction around
 * it. $8 / $9 / $10 give each commit's conversation, `actor_leases` key and epoch; `held` locks
 * the lease rows that still have those epochs `FOR SHARE`, as the group transaction's fence
 * does (an activation elsewhere waits for this statement), and only conversations in it are
 * written. It returns the conversations written (`applied`) and those held (`applied` false),
 * so the writer tells a fenced commit from one that had nothing to write.
 */
function commitSql(fenced: boolean): string {
  const held = fenced
    ? `${heldLeases('key', 8)},
   `
    : '';
  const isHeld = fenced ? ' AND r.key IN (SELECT key FROM held)' : '';
  const answer = fenced
    ? 'SELECT key, true AS applied FROM conv UNION ALL SELECT key, false FROM held'
    : 'SELECT key, true AS applied FROM conv';
  // Fenced, the inbox rows locked are only those of held conversations, so leases are locked first, as in a transaction.
  const seqs = fenced
    ? 'SELECT r.seq FROM unnest($6::text[], $7::bigint[]) AS r(key, seq) WHERE r.key IN (SELECT key FROM held)'
    : null;
  return `WITH ${held}pending AS (
     SELECT i.seq FROM relay_inbox i
      WHERE i.seq = ANY(${seqs ? `ARRAY(${seqs})` : '$7::bigint[]'}) AND i.status NOT IN ('processed', 'failed')
        FOR UPDATE),
   conv AS (
     INSERT INTO conversations (key, kind, persona, chat_guid, version, snapshot, owing_since)
     SELECT r.key, r.kind, r.persona, r.chat_guid, r.version, r.snapshot, CASE WHEN r.owing THEN now() END
       FROM jsonb_to_recordset($1::jsonb)
         AS r(key text, kind text, persona text, chat_guid text, version bigint, snapshot jsonb, inbox_seqs bigint[],
              owing boolean)
      WHERE r.inbox_seqs <@ ARRAY(SELECT seq FROM pending)${isHeld}
     ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, snapshot = EXCLUDED.snapshot,
            chat_guid = EXCLUDED.chat_guid, owing_since = EXCLUDED.owing_since, updated_at = now()
      WHERE conversations.version < EXCLUDED.version
     RETURNING key),
   msg AS (
     INSERT INTO messages (id, conversation_key, sender, direction, text, attachments, created_at)
     SELECT r.id, r.conversation_key, r.sender, r.direction, r.text, r.attachments, r.created_at
       FROM jsonb_to_recordset($2::jsonb)
         AS r(id text, conversation_key text, sender text, direction text, text text, attachments jsonb, created_at timestamptz)
      WHERE r.conversation_key IN (SELECT key FROM conv)
     ON CONFLICT (id) DO NOTHING),
   mem AS (
     INSERT INTO memories (container_tag, content, source_message_id)
     SELECT r.container_tag, r.content, r.source_message_id FROM (
       SELECT DISTINCT ON (r.container_tag, md5(r.content)) r.container_tag, r.content, r.source_message_id, r.n
         FROM ROWS FROM (jsonb_to_recordset($3::jsonb) AS (container_tag text, content text, source_message_id text))
              WITH ORDINALITY AS r(container_tag, content, source_message_id, n)
        WHERE r.container_tag IN (SELECT key FROM conv)
        ORDER BY r.container_tag, md5(r.content), r.n DESC) r
      ORDER BY r.n
     ON CONFLICT (container_tag, md5(content)) DO UPDATE
       SET id = EXCLUDED.id, source_message_id = EXCLUDED.source_message_id, created_at = EXCLUDED.created_at),
   delta AS (
     SELECT r.user_id, r.persona_id,
            jsonb_build_object('messages', sum((r.c->>'messages')::int), 'replies', sum((r.c->>'replies')::int),
                               'photos', sum((r.c->>'photos')::int)) AS c
       FROM jsonb_to_recordset($4::jsonb) AS r(key text, user_id text, persona_id text, c jsonb)
      WHERE r.key IN (SELECT key FROM conv)
      GROUP BY r.user_id, r.persona_id),
   rel AS (
     INSERT INTO relationship_state (user_id, persona_id, counters, stage, last_interaction_at)
     SELECT user_id, persona_id, c, ${stageSql('c')}, now() FROM delta
     ON CONFLICT (user_id, persona_id) DO UPDATE
       SET counters = ${merged}, stage = ${stageSql(merged)}, last_interaction_at = now()),
   outbox AS (
     INSERT INTO relay_outbox (id, chat, conversation_key, payload)
     SELECT r.id, r.chat, r.conversation_key, r.payload
       FROM jsonb_to_recordset($5::jsonb) AS r(id text, chat text, conversation_key text, payload jsonb)
      WHERE r.conversation_key IN (SELECT key FROM conv)
     ON CONFLICT (id) DO NOTHING),
   inbox AS (
     UPDATE relay_inbox i SET status = 'processed', processed_at = now()
       FROM unnest($6::text[], $7::bigint[]) AS r(key, seq)
      WHERE i.seq = r.seq AND i.status NOT IN ('processed', 'failed') AND r.key IN (SELECT key FROM conv))
   ${answer}`;
}

export const commitStatement = commitSql(false);
export const fencedCommitStatement = commitSql(true);

/** The statements run per message or per batch, prepared on each connection (`prepared`). */
const statements = {
  snapshot: prepared('conversation_snapshot', conversationQueries.snapshot),
  page: prepared('conversation_page', conversationQueries.page),
  turns: prepared('conversation_turns', conversationQueries.turns),
  commit: prepared('conversation_commit', commitStatement),
  fencedCommit: prepared('conversation_commit_fenced', fencedCommitStatement),
};

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

/** A message as the turns statement returns it. */
type TurnRecord = Omit<MessageRecord, 'conversation_key' | 'created_at'>;

const toTurn = (r: TurnRecord): Turn => ({
  id: r.id,
  sender: r.sender,
  direction: r.direction as 'in' | 'out',
  text: r.text ?? '',
  attachments: r.attachments as Turn['attachments'],
});

/**
 * A conversation's commits (a batch of its messages, in order; `snapshot` the actor resting
 * after the last) as the rows `writeBatch` writes (see `ConversationWrite`). Only the last
 * commit may forget (a forget ends a batch).
 */
export function encodeWrite(commits: readonly ConversationCommit[], snapshot: unknown): ConversationWrite {
  const last = commits[commits.length - 1];
  const tag = containerTagOf(last);
  const seqs: number[] = [];
  const messages: string[] = [];
  const memories: string[] = [];
  const relationships: string[] = [];
  const sends: string[] = [];
  for (const c of commits) {
    if (c.forget && c !== last) throw new Error('only the last commit of a batch may forget');
    if (c.inboxSeq !== null) seqs.push(c.inboxSeq);
    if (c.inbound) messages.push(JSON.stringify(toRecord(c.key, c.inbound)));
    if (c.outbound) messages.push(JSON.stringify(toRecord(c.key, c.outbound)));
    for (const m of c.memories)
      memories.push(JSON.stringify({ container_tag: tag, content: m.content, source_message_id: m.sourceMessageId }));
    relationships.push(
      JSON.stringify({
        key: c.key,
        user_id: c.relationship.userId,
        persona_id: c.relationship.persona,
        c: c.relationship.delta,
      }),
    );
    if (c.send)
      sends.push(JSON.stringify({ id: c.send.id, chat: c.send.chat.guid, conversation_key: c.key, payload: c.send }));
  }
  const conversation = JSON.stringify({
    key: last.key,
    kind: last.kind,
    persona: last.persona,
    chat_guid: last.chatGuid,
    version: last.version,
    snapshot,
    inbox_seqs: seqs,
    owing: last.next.owed.length > 0,
  });
  let bytes = Buffer.byteLength(conversation);
  for (const rows of [messages, memories, relationships, sends]) for (const r of rows) bytes += Buffer.byteLength(r);
  return {
    key: last.key,
    forget: last.forget ? tag : null,
    rows: { conversation, messages, memories, relationships, sends },
    seqs,
    bytes,
  };
}

interface TurnsRequest {
  key: string;
  limit: number;
  userId: string;
  persona: string;
}

export class ConversationRepository {
  /**
   * Conversations answering at the same moment share their reads of recent turns
   * (`BatchedReads`). Snapshots are read one by one: an activation holds one of a few
   * activation slots while it reads, so a batch would only make it wait.
   */
  private readonly turnsReads: BatchedReads<TurnsRequest, { messages: Turn[]; stage: string }>;

  constructor(private readonly pool: Pool) {
    this.turnsReads = new BatchedReads(async (requests) => {
      const { rows } = await query<{ messages: TurnRecord[]; stage: string | null }>(
        pool,
        statements.turns,
        [
          requests.map((r) => r.key),
          requests.map((r) => r.limit),
          requests.map((r) => r.userId),
          requests.map((r) => r.persona),
        ],
        { idempotent: true },
      );
      return rows.map((r) => ({ messages: r.messages.map(toTurn), stage: r.stage ?? 'new' }));
    });
  }

  async snapshot(key: string): Promise<unknown | null> {
    const { rows } = await query<{ snapshot: unknown }>(this.pool, statements.snapshot, [key], {
      idempotent: true,
    });
    return rows.length ? rows[0].snapshot : null;
  }

  /**
   * The history endpoint's answer (`{"messages": [...], "next": ...}`, JSON text) for the
   * messages before `before`, newest first; undefined when there is no such conversation.
   */
  async page(key: string, before: Date, limit: number): Promise<string | undefined> {
    const { rows } = await query<{ body: string }>(this.pool, statements.page, [key, before.toISOString(), limit], {
      idempotent: true,
    });
    return rows[0]?.body;
  }

  /** The latest `limit` messages (newest first) and the sender's relationship stage, in one round trip. */
  turns(key: string, limit: number, userId: string, persona: string): Promise<{ messages: Turn[]; stage: string }> {
    return this.turnsReads.get({ key, limit, userId, persona });
  }

  /** Conversations owing an answer for more than `olderThanMs` (see `conversationQueries.owing`). */
  async owing(olderThanMs: number, limit: number): Promise<string[]> {
    const { rows } = await query<{ key: string }>(this.pool, conversationQueries.owing, [olderThanMs, limit], {
      idempotent: true,
    });
    return rows.map((r) => r.key);
  }

  /** Stores a photo's late description (see `latePhoto`); whether the message still waited for it. */
  async rememberLatePhoto(
    messageId: string,
    attachmentId: string,
    description: string,
    placeholder: string,
    containerTag: string,
  ): Promise<boolean> {
    const { rowCount } = await query(
      this.pool,
      conversationQueries.latePhoto,
      [messageId, attachmentId, description, placeholder, containerTag],
      { idempotent: true },
    );
    return rowCount === 1;
  }

  /**
   * The group commit's writer: everything of every commit in one statement (the forgets, rare,
   * follow in the same transaction). Idempotent: a conversation changes only to a newer version,
   * and every other part of a commit is written only when its conversation did, so a retried
   * batch changes nothing. A conversation's write applies only while every inbox row it processes
   * is pending (locked `FOR UPDATE`, so two processings of one event cannot both see it
   * pending): a second processing commits nothing. Resolves, per item, whether it was applied. Given a `fence`
   * (the batch goes alone, as this one statement: no forget in it), the statement fences itself
   * (`fencedCommitStatement`) and an item whose actor's epoch moved on is `FENCED`.
   */
  readonly writeBatch: BatchWriter<ConversationWrite> = async (client, items, fence) => {
    const conversations: string[] = [];
    const messages: string[] = [];
    const memories: string[] = [];
    const relationships: string[] = [];
    const sends: string[] = [];
    const inboxKeys: string[] = [];
    const inboxSeqs: number[] = [];
    const keys: string[] = [];
    for (const { key, rows: r, seqs, forget } of items) {
      // A forget is a second statement: the group committer never gives a fence with one.
      if (fence && forget !== null) throw new Error('a forget is not written by the fenced statement');
      keys.push(key);
      conversations.push(r.conversation);
      messages.push(...r.messages);
      memories.push(...r.memories);
      relationships.push(...r.relationships);
      sends.push(...r.sends);
      for (const seq of seqs) {
        inboxKeys.push(key);
        inboxSeqs.push(seq);
      }
    }
    const list = (rows: string[]) => `[${rows.join(',')}]`;
    const values: unknown[] = [
      list(conversations),
      list(messages),
      list(memories),
      list(relationships),
      list(sends),
      inboxKeys,
      inboxSeqs,
    ];
    if (fence) values.push(keys, fence.keys, fence.epochs);
    const { rows } = await client.query<{ key: string; applied: boolean }>(
      run(fence ? statements.fencedCommit : statements.commit, values),
    );
    const applied = new Set<string>();
    const held = new Set<string>();
    for (const r of rows) (r.applied ? applied : held).add(r.key);
    for (const w of items) {
      if (w.forget !== null && applied.has(w.key))
        await client.query(conversationQueries.forget, [w.forget, FORGOTTEN_REPLY, FIXED_REPLIES]);
    }
    return items.map((w) => (fence && !held.has(w.key) ? FENCED : applied.has(w.key)));
  };
}
