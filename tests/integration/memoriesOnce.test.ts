/**
 * A container remembers a fact once (sql/008): a memory said again moves to the message that
 * said it last, with the id and date a new one would have had, so the prompt never shows one
 * fact twice, a search reads each fact once, and "the latest remembered message" — what
 * "forget that" forgets — is the one that said it last. Through the repository and the
 * migration's own SQL; the conversation's whole path is in forget.test.ts.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PHOTO_PENDING } from '../../actors/conversationRules.ts';
import { ConversationRepository, conversationQueries, encodeWrite } from '../../src/store/conversationRepository.ts';
import { sqlDir } from '../../src/store/migrate.ts';
import { commitOf, pendingInboxRow as insertPendingRow } from '../helpers/conversationCommit.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let db: TestDatabase;
const pendingInboxRow = (id: string, key: string) => insertPendingRow(db.pool, id, key);

beforeAll(async () => {
  db = await createTestDatabase();
});

/** Writes one conversation's batch of commits as the group commit does; whether it was applied. */
async function writeBatch(commits: ReturnType<typeof commitOf>[]): Promise<unknown> {
  const client = await db.pool.connect();
  try {
    return await new ConversationRepository(db.pool).writeBatch(client, [encodeWrite(commits, {})], null);
  } finally {
    client.release();
  }
}

/** The container's memories, latest first, as the recall and "forget that" order them. */
async function memoriesOf(tag: string): Promise<{ content: string; source: string }[]> {
  const { rows } = await db.pool.query(
    `SELECT content, source_message_id AS source FROM memories WHERE container_tag = $1
      ORDER BY created_at DESC, id DESC`,
    [tag],
  );
  return rows;
}

describe('a container remembers a fact once', () => {
  it('moves a memory said again to the message that said it last, in message order within a batch', async () => {
    const sender = '+15557700001';
    const key = `user_${sender}_persona_sage`;
    const first = await pendingInboxRow('evt_once_1', key);
    expect(await writeBatch([commitOf('evt_once_1', first, 1, sender, ['loves sailing', 'lives in Oslo'])])).toEqual([
      true,
    ]);

    // One batch: sailing again, a new fact, sailing once more. The last word on sailing is the
    // batch's third message, and it is the latest remembered message.
    const ids = ['evt_once_2', 'evt_once_3', 'evt_once_4'];
    const seqs = await Promise.all(ids.map((id) => pendingInboxRow(id, key)));
    const batch = [
      commitOf(ids[0], seqs[0], 2, sender, ['loves sailing']),
      commitOf(ids[1], seqs[1], 3, sender, ['works at the harbour']),
      commitOf(ids[2], seqs[2], 4, sender, ['loves sailing']),
    ];
    expect(await writeBatch(batch)).toEqual([true]);
    expect(await memoriesOf(key)).toEqual([
      { content: 'loves sailing', source: 'in_evt_once_4' },
      { content: 'works at the harbour', source: 'in_evt_once_3' },
      { content: 'lives in Oslo', source: 'in_evt_once_1' },
    ]);

    // Written again (a redelivery): nothing moves.
    expect(await writeBatch(batch)).toEqual([false]);
    expect((await memoriesOf(key)).map((m) => m.source)).toEqual(['in_evt_once_4', 'in_evt_once_3', 'in_evt_once_1']);
  });

  it('keeps each container its own: the same words in another container are another memory', async () => {
    const [a, b] = ['+15557700002', '+15557700003'];
    for (const [i, sender] of [a, b].entries()) {
      const key = `user_${sender}_persona_sage`;
      const id = `evt_once_other_${i}`;
      expect(await writeBatch([commitOf(id, await pendingInboxRow(id, key), 1, sender, ['loves sailing'])])).toEqual([
        true,
      ]);
    }
    expect(await memoriesOf(`user_${a}_persona_sage`)).toEqual([
      { content: 'loves sailing', source: 'in_evt_once_other_0' },
    ]);
    expect(await memoriesOf(`user_${b}_persona_sage`)).toEqual([
      { content: 'loves sailing', source: 'in_evt_once_other_1' },
    ]);
  });

  it('keeps one memory of a late photo described as one already remembered, dated by the later message', async () => {
    const key = 'user_+15557700004_persona_sage';
    await db.pool.query(
      "INSERT INTO conversations (key, kind, persona, chat_guid) VALUES ($1, 'direct', 'sage', 'c')",
      [key],
    );
    const photo = (id: string, minutesAgo: number) =>
      db.pool.query(
        `INSERT INTO messages (id, conversation_key, sender, direction, text, attachments, created_at)
         VALUES ($1, $2, '+15557700004', 'in', '', $3, now() - make_interval(mins => $4))`,
        [id, key, JSON.stringify([{ id: 'a1', mime: 'image/jpeg', description: PHOTO_PENDING }]), minutesAgo],
      );
    await photo('in_photo_old', 10);
    await photo('in_photo_new', 5);
    const late = (messageId: string) =>
      db.pool.query(conversationQueries.latePhoto, [messageId, 'a1', 'a red boat', PHOTO_PENDING, key]);
    await late('in_photo_new');
    // The older message's photo, seen later still, does not take the memory back in time.
    await late('in_photo_old');
    expect(await memoriesOf(key)).toEqual([
      { content: '+15557700004 shared a photo: a red boat', source: 'in_photo_new' },
    ]);
  });

  it('migrates copies already stored to the newest of each, other containers untouched', async () => {
    await db.pool.query('DROP INDEX memories_container_content_key');
    await db.pool.query(
      "INSERT INTO conversations (key, kind, persona, chat_guid) VALUES ('mig', 'direct', 'sage', 'c')",
    );
    await db.pool.query(
      `INSERT INTO messages (id, conversation_key, sender, direction, created_at)
       SELECT 'mig_' || g, 'mig', '+1', 'in', now() - make_interval(mins => 10 - g) FROM generate_series(1, 4) g`,
    );
    await db.pool.query(
      `INSERT INTO memories (container_tag, content, source_message_id, created_at) VALUES
         ('mig_a', 'loves tea', 'mig_1', now() - interval '9 minutes'),
         ('mig_a', 'loves tea', 'mig_3', now() - interval '7 minutes'),
         ('mig_a', 'loves tea', 'mig_2', now() - interval '8 minutes'),
         ('mig_a', 'loves jazz', 'mig_4', now() - interval '6 minutes'),
         ('mig_b', 'loves tea', 'mig_1', now() - interval '9 minutes')`,
    );
    await db.pool.query(await readFile(path.join(sqlDir, '008_memories_once_per_container.sql'), 'utf8'));
    expect(await memoriesOf('mig_a')).toEqual([
      { content: 'loves jazz', source: 'mig_4' },
      { content: 'loves tea', source: 'mig_3' },
    ]);
    expect(await memoriesOf('mig_b')).toEqual([{ content: 'loves tea', source: 'mig_1' }]);
    await expect(
      db.pool.query("INSERT INTO memories (container_tag, content) VALUES ('mig_a', 'loves tea')"),
    ).rejects.toThrow(/memories_container_content_key/);
  });
});
