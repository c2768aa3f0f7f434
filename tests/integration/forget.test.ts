/**
 * "forget that" through the relay: every memory of the forgotten message goes, its text is
 * blanked in `messages` and `relay_inbox`, and Sage's replies that may have quoted it are
 * replaced, so none of it reaches the model or the history endpoint again. Once with the real
 * `openai` client against the fake OpenAI server (whose replies echo the message), once with
 * the offline brain (whose replies quote the message and its memories).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { FORGOTTEN_REPLY, SAFETY_REPLIES } from '../../actors/conversationRules.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { type FakeOpenAI, openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, type EventOptions, postEvents, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const SECRET = 'My name is W. I love durian pancakes. My brother O. is in rehab.';
/** Any trace of the secret: the name (as a word, case-sensitive), the durian, the rehab. */
const TRACE = /\bW\b|durian|rehab/i;
const RELAY_ENV = { SENDER_MESSAGES_PER_MINUTE: '600', SENDER_BURST: '100' };

interface Chat {
  server: RunningServer;
  db: TestDatabase;
  relay: RelayClient;
  relayToken: string;
  adminToken: string;
}

async function startChat(env: Record<string, string>): Promise<Chat> {
  const db = await createTestDatabase();
  const server = await startTestServer(db.url, { ...RELAY_ENV, ...env });
  const relayToken = await token('relay-forget', { role: 'relay' });
  const relay = await connectRelay(server.url, relayToken, { autoAck: true });
  return { server, db, relay, relayToken, adminToken: await token('admin-forget', { role: 'admin' }) };
}

/** Sends an event and waits for the reply to it; returns the event id and the reply's text. */
async function say(chat: Chat, o: EventOptions): Promise<{ id: string; reply: string }> {
  const e = relayEvent(o);
  const res = await postEvents(chat.server.url, chat.relayToken, e);
  expect(res.status).toBe(202);
  const send = await chat.relay.waitForSend((s) => s.replyTo === e.id);
  return { id: e.id as string, reply: send.text };
}

/** Sends a group event nobody addressed to Sage and waits until it is stored. */
async function mention(chat: Chat, o: EventOptions): Promise<string> {
  const e = relayEvent(o);
  expect((await postEvents(chat.server.url, chat.relayToken, e)).status).toBe(202);
  await expect
    .poll(async () => (await chat.db.pool.query('SELECT 1 FROM messages WHERE id = $1', [`in_${e.id}`])).rowCount)
    .toBe(1);
  return e.id as string;
}

/** Every text of the conversation as the history endpoint shows it. */
async function historyTexts(chat: Chat, key: string): Promise<string[]> {
  const res = await api(chat.server.url, 'GET', `/v1/conversations/${encodeURIComponent(key)}/messages?limit=200`, {
    token: chat.adminToken,
  });
  expect(res.status).toBe(200);
  return res.body.messages.map(
    (m: { text: string; attachments: unknown[] }) => `${m.text} ${JSON.stringify(m.attachments)}`,
  );
}

async function memoriesOf(chat: Chat, eventId: string): Promise<string[]> {
  const { rows } = await chat.db.pool.query('SELECT content FROM memories WHERE source_message_id = $1', [
    `in_${eventId}`,
  ]);
  return rows.map((r) => r.content);
}

async function inboxPayload(chat: Chat, eventId: string): Promise<Record<string, unknown>> {
  const { rows } = await chat.db.pool.query('SELECT payload FROM relay_inbox WHERE event_id = $1', [eventId]);
  expect(rows).toHaveLength(1);
  return rows[0].payload;
}

describe('"forget that" with the model', () => {
  const ALICE = '+15559100001';
  const BOB = '+15559100002';
  let chat: Chat;
  let fake: FakeOpenAI;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    chat = await startChat(openAIEnv(fake));
  });

  const promptFor = (marker: string) => fake.promptFor(marker);

  it('forgets the whole message: no trace of it in a later prompt, the history, the inbox or the memories', async () => {
    const key = `user_${ALICE}_persona_sage`;
    await say(chat, { sender: ALICE, text: 'I live in Oslo.' });
    const secret = await say(chat, { sender: ALICE, text: SECRET });
    expect(secret.reply).toMatch(/durian/);
    expect((await memoriesOf(chat, secret.id)).length).toBeGreaterThan(1);
    await say(chat, { sender: ALICE, text: 'What should I have for breakfast? q-before' });
    expect(promptFor('q-before')).toMatch(/durian/);

    const forget = await say(chat, { sender: ALICE, text: 'forget that' });
    expect(forget.reply).toBe(SAFETY_REPLIES.forgotten);

    await say(chat, { sender: ALICE, text: 'What do you know about me? q-after' });
    const prompt = promptFor('q-after');
    expect(prompt).not.toMatch(TRACE);
    expect(prompt).not.toContain(FORGOTTEN_REPLY);
    expect(prompt).toMatch(/Oslo/);
    expect(await memoriesOf(chat, secret.id)).toEqual([]);
    const history = await historyTexts(chat, key);
    expect(history.filter((t) => TRACE.test(t))).toEqual([]);
    expect(history.some((t) => t.startsWith(FORGOTTEN_REPLY))).toBe(true);
    const payload = await inboxPayload(chat, secret.id);
    expect(JSON.stringify(payload)).not.toMatch(TRACE);
    expect(payload.text ?? '').toBe('');
  });

  it('forgets in a group only in that group', async () => {
    const here = 'chat-forget-here';
    const there = 'chat-forget-there';
    const inThere = await mention(chat, { sender: BOB, group: there, text: SECRET });
    const inHere = await mention(chat, { sender: BOB, group: here, text: SECRET });
    const forget = await say(chat, { sender: BOB, group: here, text: 'Sage, forget that.' });
    expect(forget.reply).toBe(SAFETY_REPLIES.forgotten);

    expect(await memoriesOf(chat, inHere)).toEqual([]);
    expect((await memoriesOf(chat, inThere)).length).toBeGreaterThan(1);
    expect((await historyTexts(chat, `group_${here}`)).filter((t) => TRACE.test(t))).toEqual([]);
    expect((await historyTexts(chat, `group_${there}`)).filter((t) => TRACE.test(t))).toHaveLength(1);
    expect((await inboxPayload(chat, inThere)).text).toBe(SECRET);

    await say(chat, { sender: BOB, group: here, text: 'Sage, what do you know about me? q-here' });
    expect(promptFor('q-here')).not.toMatch(TRACE);
    await say(chat, { sender: BOB, group: there, text: 'Sage, what do you know about me? q-there' });
    expect(promptFor('q-there')).toMatch(/durian/);
  });
});

describe('"forget that" with the offline brain', () => {
  const CAROL = '+15559100003';
  const DAN = '+15559100004';
  let chat: Chat;

  beforeAll(async () => {
    chat = await startChat({});
  });

  it('replaces the replies that quoted the message or its memories, and keeps the memories of earlier messages', async () => {
    const key = `user_${CAROL}_persona_sage`;
    const earlier = await say(chat, { sender: CAROL, text: 'I live in Oslo.' });
    const secret = await say(chat, { sender: CAROL, text: SECRET });
    expect(secret.reply).toMatch(/You said: .*durian/);
    const question = await say(chat, { sender: CAROL, text: 'Any ideas for durian pancakes tonight?' });
    expect(question.reply).toMatch(/I remember: .*durian/);

    expect((await say(chat, { sender: CAROL, text: 'please forget that' })).reply).toBe(SAFETY_REPLIES.forgotten);

    const later = await say(chat, { sender: CAROL, text: 'What do you remember about Oslo and my name?' });
    expect(later.reply).toMatch(/I remember: .*Oslo/);
    expect(later.reply).not.toMatch(/name is|durian|rehab/);
    expect(await memoriesOf(chat, earlier.id)).toHaveLength(1);
    expect(await memoriesOf(chat, secret.id)).toEqual([]);
    const history = await historyTexts(chat, key);
    // The question itself names the durian: it is the person's own, later message.
    expect(history.filter((t) => TRACE.test(t) && !t.startsWith('Any ideas'))).toEqual([]);
    const { rows } = await chat.db.pool.query('SELECT id, text FROM messages WHERE id = ANY($1) ORDER BY id', [
      [`out_${secret.id}`, `out_${question.id}`],
    ]);
    expect(rows.map((r) => r.text)).toEqual([FORGOTTEN_REPLY, FORGOTTEN_REPLY]);
    const sent = await chat.db.pool.query("SELECT payload->>'text' AS text FROM relay_outbox WHERE id = $1", [
      `out_${secret.id}`,
    ]);
    expect(sent.rows).toEqual([{ text: FORGOTTEN_REPLY }]);
    expect(JSON.stringify(await inboxPayload(chat, secret.id))).not.toMatch(TRACE);
  });

  it('says there is nothing to forget when nothing here is remembered, and changes nothing', async () => {
    const key = `user_${DAN}_persona_sage`;
    const hello = await say(chat, { sender: DAN, text: 'hello there' });
    expect((await say(chat, { sender: DAN, text: 'forget that' })).reply).toBe(SAFETY_REPLIES.nothingToForget);
    const history = await historyTexts(chat, key);
    expect(history.some((t) => t.startsWith('hello there'))).toBe(true);
    expect(history.some((t) => t.startsWith(hello.reply))).toBe(true);
    expect((await inboxPayload(chat, hello.id)).text).toBe('hello there');
  });

  it('forgets a fact said twice: the memory said again is the latest, and "forget that" leaves none of it', async () => {
    const FRANK = '+15559100006';
    const key = `user_${FRANK}_persona_sage`;
    const first = await say(chat, { sender: FRANK, text: 'I love durian pancakes.' });
    await say(chat, { sender: FRANK, text: 'I live in Oslo.' });
    const again = await say(chat, { sender: FRANK, text: 'I love durian pancakes.' });
    const { rows } = await chat.db.pool.query(
      'SELECT content, source_message_id FROM memories WHERE container_tag = $1 ORDER BY created_at DESC, id DESC',
      [key],
    );
    // One memory of the fact, from the message that said it last; Oslo's is older now.
    expect(rows.map((r) => r.source_message_id)).toEqual([`in_${again.id}`, expect.stringMatching(/^in_/)]);
    expect(rows.filter((r) => TRACE.test(r.content))).toHaveLength(1);
    expect(await memoriesOf(chat, first.id)).toEqual([]);

    expect((await say(chat, { sender: FRANK, text: 'forget that' })).reply).toBe(SAFETY_REPLIES.forgotten);
    const later = await say(chat, { sender: FRANK, text: 'What do you remember about Oslo and pancakes?' });
    expect(later.reply).toMatch(/I remember: .*Oslo/);
    expect(later.reply).not.toMatch(TRACE);
    const left = await chat.db.pool.query('SELECT content FROM memories WHERE container_tag = $1', [key]);
    expect(left.rows.filter((r) => TRACE.test(r.content))).toEqual([]);
  });

  it('says there is nothing to forget once the only remembered message is forgotten', async () => {
    const ERIN = '+15559100005';
    await say(chat, { sender: ERIN, text: 'I love durian pancakes.' });
    expect((await say(chat, { sender: ERIN, text: 'forget that' })).reply).toBe(SAFETY_REPLIES.forgotten);
    expect((await say(chat, { sender: ERIN, text: 'forget that' })).reply).toBe(SAFETY_REPLIES.nothingToForget);
    const history = await historyTexts(chat, `user_${ERIN}_persona_sage`);
    expect(history.filter((t) => TRACE.test(t))).toEqual([]);
    expect(history.filter((t) => t.startsWith(SAFETY_REPLIES.forgotten))).toHaveLength(1);
  });
});
