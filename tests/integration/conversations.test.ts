/**
 * Sage's conversations through the relay, with the real `openai` client talking to a local
 * fake OpenAI server: the privacy suite, photos, safety, group behaviour, forgetting.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { SAFETY_REPLIES } from '../../actors/conversationRules.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { type FakeOpenAI, isImageRequest, openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { connectRelay, type EventOptions, postEvents, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15558000001';
const BOB = '+15558000002';
const CAROL = '+15558000003';
const JAKE = '+15558000004';

let server: RunningServer;
let db: TestDatabase;
let fake: FakeOpenAI;
let relay: RelayClient;
let relayToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  fake = await startFakeOpenAI({ flag: { FLAGME: 'harassment', 'end my life': 'self-harm', BADWORD: 'hate' } });
  server = await startTestServer(db.url, openAIEnv(fake, { SENDER_MESSAGES_PER_MINUTE: '600', SENDER_BURST: '100' }));
  relayToken = await token('relay-conv', { role: 'relay' });
  relay = await connectRelay(server.url, relayToken, { autoAck: true });
});

/** Sends an event and waits until it is processed (its reply sent, or its message stored). */
async function say(o: EventOptions, expectReply: boolean): Promise<string | null> {
  const e = relayEvent(o);
  const res = await postEvents(server.url, relayToken, e);
  expect(res.status).toBe(202);
  if (expectReply) return (await relay.waitForSend((s) => s.replyTo === e.id)).text;
  await expect
    .poll(async () => (await db.pool.query('SELECT 1 FROM messages WHERE id = $1', [`in_${e.id}`])).rowCount, {
      timeout: 10_000,
    })
    .toBe(1);
  // Processing commits the message with everything else, so nothing more is coming for it.
  expect(relay.sends.some((s) => s.replyTo === e.id)).toBe(false);
  return null;
}

const promptFor = (marker: string) => fake.promptFor(marker);

describe('privacy between containers', () => {
  it('does not show a group memory in a direct chat', async () => {
    await say(
      { sender: ALICE, group: 'chat-g1', text: 'We are planning a surprise party for Carol on Friday.' },
      false,
    );
    await say({ sender: ALICE, text: 'Sage, what is happening on Friday? q-direct-1' }, true);
    expect(promptFor('q-direct-1')).not.toMatch(/surprise party/i);
  });

  it('does not show a direct memory in a group chat', async () => {
    await say({ sender: BOB, text: 'I love free jazz records.' }, true);
    await say({ sender: BOB, group: 'chat-g2', text: 'Sage, what music should we play tonight? q-group-2' }, true);
    expect(promptFor('q-group-2')).not.toMatch(/jazz/i);
  });

  it('keeps two groups apart: the surprise party planned in group A never reaches group B, where Carol is', async () => {
    await say(
      {
        sender: ALICE,
        group: 'chat-A',
        participants: [ALICE, BOB],
        text: "We're planning a surprise party for Carol, keep it secret.",
      },
      false,
    );
    await say({ sender: BOB, group: 'chat-A', text: 'Sage, remember that the cake is chocolate. q-a' }, true);
    expect(promptFor('q-a')).toMatch(/surprise party/i);
    await say(
      {
        sender: ALICE,
        group: 'chat-B',
        participants: [ALICE, CAROL],
        text: 'Sage, anything fun coming up this week? q-b',
      },
      true,
    );
    const b = promptFor('q-b');
    expect(b).not.toMatch(/surprise|party|cake|secret/i);
  });

  it('keeps a complaint about a roommate out of the group chat with that roommate', async () => {
    await say({ sender: ALICE, text: 'My roommate Jake never does the dishes and it drives me crazy.' }, true);
    await say(
      {
        sender: ALICE,
        group: 'chat-flat',
        participants: [ALICE, JAKE],
        text: 'Sage, how should we split the chores? q-flat',
      },
      true,
    );
    const prompt = promptFor('q-flat');
    expect(prompt).not.toMatch(/dishes|drives me crazy|never does/i);
    const direct = await db.pool.query('SELECT content FROM memories WHERE container_tag = $1', [
      `user_${ALICE}_persona_sage`,
    ]);
    expect(direct.rows.some((r) => /roommate/i.test(r.content))).toBe(true);
  });

  it('forgets only within the conversation where "forget that" was said', async () => {
    const dm = `user_${CAROL}_persona_sage`;
    await say({ sender: CAROL, text: 'I love salsa dancing.' }, true);
    await say({ sender: CAROL, group: 'chat-forget', text: 'We are planning a picnic by the lake.' }, false);
    const reply = await say({ sender: CAROL, group: 'chat-forget', text: 'Sage, forget that.' }, true);
    expect(reply).toBe(SAFETY_REPLIES.forgotten);
    const group = await db.pool.query("SELECT content FROM memories WHERE container_tag = 'group_chat-forget'");
    expect(group.rows).toHaveLength(0);
    const blanked = await db.pool.query(
      "SELECT text FROM messages WHERE conversation_key = 'group_chat-forget' AND text LIKE '%picnic%'",
    );
    expect(blanked.rows).toHaveLength(0);
    const direct = await db.pool.query('SELECT content FROM memories WHERE container_tag = $1', [dm]);
    expect(direct.rows.map((r) => r.content).join()).toMatch(/salsa/);
    await say({ sender: CAROL, group: 'chat-forget', text: 'Sage, what were we planning? q-forgot' }, true);
    expect(promptFor('q-forgot')).not.toMatch(/picnic/i);
  });
});

describe('photos', () => {
  it('answers "what do you think?" sent while the photo before it is being looked at with the photo in view', async () => {
    fake.behaviour.imageDelayMs = 1500;
    fake.behaviour.describe = 'a red bicycle leaning on a blue wall';
    const photo = relayEvent({
      sender: BOB,
      attachments: [{ id: 'p1', mime: 'image/jpeg', data: Buffer.from('fake jpeg bytes').toString('base64') }],
    });
    const question = relayEvent({ sender: BOB, text: 'what do you think? q-photo' });
    const looked = fake.chats.filter(isImageRequest).length;
    expect((await postEvents(server.url, relayToken, photo)).status).toBe(202);
    // The vision model has the photo (and answers only after imageDelayMs): the question comes mid-analysis.
    await expect.poll(() => fake.chats.filter(isImageRequest).length, { timeout: 10_000 }).toBe(looked + 1);
    expect((await postEvents(server.url, relayToken, question)).status).toBe(202);
    await relay.waitForSend((s) => s.replyTo === question.id, 15_000);
    expect(promptFor('q-photo')).toContain('a red bicycle leaning on a blue wall');
    const images = fake.chats.filter(isImageRequest);
    expect(images.length).toBeGreaterThan(0);
    fake.behaviour.imageDelayMs = 0;
  });

  it('stores an unsupported file type and describes it without opening it', async () => {
    const before = fake.chats.filter(isImageRequest).length;
    const e = relayEvent({ sender: BOB, attachments: [{ id: 'doc', mime: 'application/pdf', data: 'JVBERi0=' }] });
    await postEvents(server.url, relayToken, e);
    await relay.waitForSend((s) => s.replyTo === e.id);
    expect(fake.chats.filter(isImageRequest).length).toBe(before);
    const row = await db.pool.query('SELECT attachments FROM messages WHERE id = $1', [`in_${e.id}`]);
    expect(row.rows[0].attachments[0]).toMatchObject({
      id: 'doc',
      mime: 'application/pdf',
      description: expect.stringContaining('not opened'),
    });
  });
});

describe('safety', () => {
  it('answers flagged input with a safe reply and self-harm with crisis resources', async () => {
    expect(await say({ sender: JAKE, text: 'FLAGME something nasty' }, true)).toBe(SAFETY_REPLIES.refused);
    const crisis = await say({ sender: JAKE, text: 'I want to end my life' }, true);
    expect(crisis).toBe(SAFETY_REPLIES.crisis);
    expect(crisis).toContain('988');
  });

  it('replaces a flagged reply of the model', async () => {
    fake.behaviour.reply = () => 'BADWORD BADWORD';
    try {
      expect(await say({ sender: JAKE, text: 'tell me a joke' }, true)).toBe(SAFETY_REPLIES.replacedOutput);
    } finally {
      fake.behaviour.reply = undefined;
    }
  });
});

describe('groups', () => {
  it('stores every group message but answers only when Sage is named or answered', async () => {
    await say({ sender: ALICE, group: 'chat-quiet', text: 'anyone up for lunch?' }, false);
    const named = relayEvent({ sender: BOB, group: 'chat-quiet', text: 'SAGE, where should we eat?' });
    await postEvents(server.url, relayToken, named);
    const answer = await relay.waitForSend((s) => s.replyTo === named.id);
    expect(answer.chat).toEqual({ guid: 'chat-quiet', group: true });
    expect(answer).not.toHaveProperty('to');
    await say({ sender: ALICE, group: 'chat-quiet', text: 'that sounds good', replyTo: answer.id }, true);
    await say({ sender: ALICE, group: 'chat-quiet', text: 'the sagebrush was lovely' }, false);
  });

  it('updates the relationship state of every sender', async () => {
    // Every sender of this file, with how many messages of theirs are stored, beside their state.
    const { rows } = await db.pool.query(
      `SELECT m.sender, count(*)::int AS sent, r.counters, r.stage
         FROM messages m LEFT JOIN relationship_state r ON r.user_id = m.sender AND r.persona_id = 'sage'
        WHERE m.direction = 'in'
        GROUP BY m.sender, r.counters, r.stage
        ORDER BY m.sender`,
    );
    expect(rows.map((r) => r.sender)).toEqual([ALICE, BOB, CAROL, JAKE]);
    for (const r of rows) {
      expect(r.counters?.messages, r.sender).toBe(r.sent);
      expect(r.stage, r.sender).toEqual(expect.any(String));
    }
  });
});
