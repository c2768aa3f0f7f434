/** Conversation commits built by hand, for tests that write them through the repository. */
import type { ConversationCommit } from '../../actors/conversationTypes.ts';
import type { Pool } from '../../src/store/pool.ts';

/**
 * A commit of relay event `id` (inbox row `seq`) for the direct conversation of `sender` at
 * `version`: its message, Sage's reply and its send, and `memories` from its message (by
 * default one that names the event: a container keeps one memory of a fact said again).
 */
export function commitOf(
  id: string,
  seq: number,
  version: number,
  sender: string,
  memories = [`loves durian ${id}`],
): ConversationCommit {
  const key = `user_${sender}_persona_sage`;
  const chat = { guid: `iMessage;-;${sender}`, group: false };
  const at = Date.now();
  return {
    key,
    kind: 'direct',
    persona: 'sage',
    chatGuid: chat.guid,
    version,
    inbound: { id: `in_${id}`, sender, direction: 'in', text: `I love durian ${id}`, attachments: [], at },
    outbound: { id: `out_${id}`, sender: 'sage', direction: 'out', text: 'again?', attachments: [], at },
    send: { type: 'send', id: `out_${id}`, replyTo: id, chat, to: sender, text: 'again?' },
    memories: memories.map((content) => ({ content, sourceMessageId: `in_${id}` })),
    forget: false,
    relationship: { userId: sender, persona: 'sage', delta: { messages: 1, replies: 1, photos: 0 } },
    inboxSeq: seq,
    next: { owed: [] } as unknown as ConversationCommit['next'],
  };
}

/** A pending inbox row for conversation `key`, as ingest stores one; its seq (a commit's `inboxSeq`). */
export async function pendingInboxRow(pool: Pool, id: string, key: string): Promise<number> {
  const { rows } = await pool.query(
    "INSERT INTO relay_inbox (event_id, conversation_key, payload) VALUES ($1, $2, '{}') RETURNING seq",
    [id, key],
  );
  return Number(rows[0].seq);
}
