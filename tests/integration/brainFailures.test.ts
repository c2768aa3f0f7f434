/**
 * What the README promises when the model API misbehaves, through the real server and the
 * real `openai` client against the fake OpenAI server: moderation falls back to the local
 * classifier, a photo that cannot be seen does not stop the conversation (nor hold the next
 * message past PHOTO_WAIT_MS), 4xx answers are neither retried nor counted by the breaker, and
 * a 429 is retried once after its Retry-After and counted.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { PHOTO_PENDING, PHOTO_UNSEEN, SAFETY_REPLIES } from '../../actors/conversationRules.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { type FakeBehaviour, type FakeOpenAI, openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, type EventOptions, postEvents, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15559100001';
const COULD_NOT_LOOK = PHOTO_UNSEEN;
const PHOTO = { id: 'p1', mime: 'image/png', data: Buffer.from('fake png bytes').toString('base64') };

interface Setup {
  db: TestDatabase;
  fake: FakeOpenAI;
  server: RunningServer;
  relay: RelayClient;
  /** Posts an event; resolves with it once stored. */
  post(o: EventOptions): Promise<Record<string, unknown>>;
  /** Posts an event and resolves with the text of its reply. */
  say(o: EventOptions): Promise<string>;
  /** The text prompt (system + turns) of the chat request that ends with `marker`. */
  promptFor(marker: string): string | undefined;
  /** The state of `dependency`'s breaker in /metrics (0 closed, 1 open). */
  breaker(dependency: string): Promise<number>;
}

async function setup(behaviour: FakeBehaviour, env: Record<string, string> = {}): Promise<Setup> {
  const db = await createTestDatabase();
  const fake = await startFakeOpenAI(behaviour);
  // Every message here is answered: no sender's burst may be throttled.
  const server = await startTestServer(db.url, openAIEnv(fake, { SENDER_BURST: '100', ...env }));
  const relayToken = await token('relay-brain-failures', { role: 'relay' });
  const relay = await connectRelay(server.url, relayToken, { autoAck: true });
  const post = async (o: EventOptions) => {
    const e = relayEvent(o);
    expect((await postEvents(server.url, relayToken, e)).status).toBe(202);
    return e;
  };
  return {
    db,
    fake,
    server,
    relay,
    post,
    async say(o) {
      const e = await post(o);
      return (await relay.waitForSend((s) => s.replyTo === e.id)).text;
    },
    promptFor: (marker) => fake.promptTexts().find((p) => p.endsWith(marker)),
    async breaker(dependency) {
      const metrics = await api(server.url, 'GET', '/metrics');
      const m = new RegExp(`archety_circuit_breaker_state\\{dependency="${dependency}"\\} (\\d)`).exec(metrics.body);
      return Number(m?.[1]);
    },
  };
}

describe('when the moderation API fails', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup({ moderationFailure: 'error' });
  });

  it('answers self-harm wording with crisis resources, decided by the local classifier', async () => {
    const before = s.fake.count('moderation');
    expect(await s.say({ sender: ALICE, text: 'some days I want to end my life' })).toBe(SAFETY_REPLIES.crisis);
    // The API was asked (and failed): the local classifier stood in rather than being the only path.
    expect(s.fake.count('moderation')).toBeGreaterThan(before);
    expect(s.fake.count('chat')).toBe(0);
  });

  it('answers ordinary text with the model reply', async () => {
    expect(await s.say({ sender: ALICE, text: 'what a lovely morning q-ordinary' })).toBe(
      'Model reply to: what a lovely morning q-ordinary',
    );
  });

  it('replaces a threatening model reply, as the local classifier flags it', async () => {
    s.fake.behaviour.reply = () => 'I know where you live';
    expect(await s.say({ sender: ALICE, text: 'tell me something q-threat' })).toBe(SAFETY_REPLIES.replacedOutput);
    s.fake.behaviour.reply = undefined;
  });

  it('answers self-harm wording with crisis resources when the moderation API hangs past its time limit', async () => {
    const hanging = await setup({ moderationFailure: 'hang' }, { MODEL_TIMEOUT_MS: '300' });
    expect(await hanging.say({ sender: ALICE, text: "I don't want to be alive anymore" })).toBe(SAFETY_REPLIES.crisis);
    expect(await hanging.say({ sender: ALICE, text: 'anyway, how are you? q-hang' })).toBe(
      'Model reply to: anyway, how are you? q-hang',
    );
    expect(hanging.fake.count('moderation')).toBeGreaterThan(0);
  });
});

describe('when the vision model fails or is slow', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup({}, { PHOTO_WAIT_MS: '300' });
  });

  it('answers a photo whose analysis failed, telling the model it could not look at it, and stores that', async () => {
    s.fake.behaviour.imageFailure = 'error';
    const before = s.fake.count('image');
    const photo = await s.post({ sender: ALICE, text: 'look at this q-failed', attachments: [PHOTO] });
    expect((await s.relay.waitForSend((x) => x.replyTo === photo.id)).text).toBe(
      'Model reply to: look at this q-failed',
    );
    expect(s.fake.count('image') - before).toBe(1);
    expect(s.promptFor('q-failed')).toContain(COULD_NOT_LOOK);
    expect(s.promptFor('q-failed')).not.toContain('a photo of something');
    const row = await s.db.pool.query('SELECT attachments FROM messages WHERE id = $1', [`in_${photo.id}`]);
    expect(row.rows[0].attachments).toEqual([{ id: 'p1', mime: 'image/png', description: COULD_NOT_LOOK }]);
  });

  it('answers "what do you think?" after a photo whose analysis outlasts PHOTO_WAIT_MS, in order, though the vision request never finished', async () => {
    s.fake.behaviour.imageFailure = 'hang';
    const before = s.fake.count('image');
    const photo = await s.post({ sender: ALICE, attachments: [PHOTO] });
    const question = await s.post({ sender: ALICE, text: 'what do you think? q-slow' });
    // The vision request hangs until PHOTO_LATE_MS (120 s) and the client's own timeout; only
    // PHOTO_WAIT_MS (300 ms) lets the question be answered within this wait.
    await s.relay.waitForSend((x) => x.replyTo === question.id, 5000);
    const order = s.relay.sends.map((x) => x.replyTo);
    expect(order.indexOf(photo.id as string)).toBeGreaterThanOrEqual(0);
    expect(order.indexOf(photo.id as string)).toBeLessThan(order.indexOf(question.id as string));
    expect(s.fake.count('image') - before).toBe(1);
    expect(s.promptFor('q-slow')).toContain(PHOTO_PENDING);
  });
});

describe('a photo seen after PHOTO_WAIT_MS', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup({ imageDelayMs: 1500 }, { PHOTO_WAIT_MS: '300', PHOTO_LATE_MS: '10000' });
  });

  const attachmentsOf = async (eventId: unknown) =>
    (await s.db.pool.query('SELECT attachments FROM messages WHERE id = $1', [`in_${eventId}`])).rows[0]?.attachments;
  const memoriesOf = async (eventId: unknown) =>
    (
      await s.db.pool.query(
        `SELECT mem.content, mem.created_at = m.created_at AS dated_like_message
           FROM memories mem JOIN messages m ON m.id = mem.source_message_id WHERE m.id = $1 ORDER BY mem.id`,
        [`in_${eventId}`],
      )
    ).rows;
  const until = async (check: () => Promise<boolean>, ms = 8000) => {
    const end = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > end) throw new Error('timed out waiting');
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  it('is answered as still being looked at, then remembered: the stored message and a memory carry it, and the next answer sees it', async () => {
    s.fake.behaviour.describe = 'a red kayak on a lake';
    const photo = await s.post({ sender: ALICE, text: 'my new boat q-late', attachments: [PHOTO] });
    const answered = Date.now();
    await s.relay.waitForSend((x) => x.replyTo === photo.id, 5000);
    expect(s.promptFor('q-late')).toContain(PHOTO_PENDING);
    expect(s.promptFor('q-late')).not.toContain('a red kayak');
    // Committed with the placeholder, then the description replaces it once seen.
    await until(async () => (await attachmentsOf(photo.id))?.[0]?.description === 'a red kayak on a lake');
    expect(Date.now() - answered).toBeGreaterThan(500);
    expect(await memoriesOf(photo.id)).toContainEqual({
      content: `${ALICE} shared a photo: a red kayak on a lake`,
      dated_like_message: true,
    });
    expect(await s.say({ sender: ALICE, text: 'do you like it? q-after-late' })).toBe(
      'Model reply to: do you like it? q-after-late',
    );
    expect(s.promptFor('q-after-late')).toContain('a red kayak on a lake');
    expect(s.promptFor('q-after-late')).not.toContain(PHOTO_PENDING);
  });

  it('is not remembered when the message was forgotten before it was seen', async () => {
    s.fake.behaviour.describe = 'the secret map q-map';
    const photo = await s.post({ sender: ALICE, text: 'My name is Wilhelmina.', attachments: [PHOTO] });
    await s.relay.waitForSend((x) => x.replyTo === photo.id, 5000);
    expect(await s.say({ sender: ALICE, text: 'forget that' })).toBe(SAFETY_REPLIES.forgotten);
    // The vision answer comes 1.5 s after it was asked (before the photo was answered): wait past it.
    await new Promise((r) => setTimeout(r, 1600));
    expect(await attachmentsOf(photo.id)).toEqual([]);
    expect(await memoriesOf(photo.id)).toEqual([]);
    const all = await s.db.pool.query("SELECT count(*)::int AS n FROM memories WHERE content LIKE '%q-map%'");
    expect(all.rows[0].n).toBe(0);
  });
});

describe('a message with several photos', () => {
  it('looks at its photos together, not one after the other, and answers with every description', async () => {
    const looking = 1000;
    const s = await setup({ imageDelayMs: looking }, { PHOTO_WAIT_MS: '10000' });
    const photos = [1, 2, 3, 4].map((n) => ({ ...PHOTO, id: `p${n}` }));
    const before = s.fake.arrivals.length;
    expect(await s.say({ sender: ALICE, text: 'our trip q-four', attachments: photos })).toBe(
      'Model reply to: our trip q-four',
    );
    const asked = s.fake.arrivals.slice(before).filter((a) => a.kind === 'image');
    expect(asked).toHaveLength(4);
    // Each photo takes `looking` ms to be seen: all four were asked for before the first was seen.
    for (const a of asked) expect(a.at - asked[0].at).toBeLessThan(looking);
    const row = await s.db.pool.query("SELECT attachments FROM messages WHERE text = 'our trip q-four'");
    expect(row.rows[0].attachments.map((a: { description: string }) => a.description)).toEqual(
      photos.map(() => 'a photo of something'),
    );
  });
});

describe('4xx answers from the model', () => {
  it('answers a 400 with the fallback without retrying it, and MODEL_BREAKER_FAILURES of them leave the breaker closed', async () => {
    const s = await setup({ chatFailure: 400 }, { MODEL_BREAKER_FAILURES: '2', MODEL_BREAKER_HALF_OPEN_MS: '60000' });
    for (let i = 1; i <= 3; i++) {
      expect(await s.say({ sender: ALICE, text: `bad request ${i}` })).toBe(SAFETY_REPLIES.fallback);
      expect(s.fake.count('chat')).toBe(i);
    }
    expect(await s.breaker('model')).toBe(0);
    s.fake.behaviour.chatFailure = null;
    expect(await s.say({ sender: ALICE, text: 'and now? q-after-400' })).toBe('Model reply to: and now? q-after-400');
    expect(s.fake.count('chat')).toBe(4);
  });

  it('answers with the fallback when the API key is refused (401), asks once per message, keeps the breaker closed and screens locally', async () => {
    const s = await setup(
      { apiKey: 'sk-the-right-key' },
      { OPENAI_API_KEY: 'sk-a-wrong-key', MODEL_BREAKER_FAILURES: '2', MODEL_BREAKER_HALF_OPEN_MS: '60000' },
    );
    for (let i = 1; i <= 3; i++) {
      expect(await s.say({ sender: ALICE, text: `hello ${i}` })).toBe(SAFETY_REPLIES.fallback);
      expect(s.fake.count('chat')).toBe(i);
      expect(s.fake.count('moderation')).toBe(i);
    }
    expect(await s.say({ sender: ALICE, text: 'I want to kill myself' })).toBe(SAFETY_REPLIES.crisis);
    expect(await s.breaker('model')).toBe(0);
    expect(await s.breaker('moderation')).toBe(0);
    // The key is accepted again (rotated at the provider): the next message reaches the model.
    s.fake.behaviour.apiKey = undefined;
    expect(await s.say({ sender: ALICE, text: 'there you are q-after-401' })).toBe(
      'Model reply to: there you are q-after-401',
    );
    expect(s.fake.count('chat')).toBe(4);
  });
});

describe('429 answers from the model', () => {
  it('retries a 429 once, after the Retry-After it asked for', async () => {
    const s = await setup({ chatFailure: 429, chatFailureCount: 1, retryAfter: '1' });
    expect(await s.say({ sender: ALICE, text: 'busy? q-429' })).toBe('Model reply to: busy? q-429');
    const chats = s.fake.arrivals.filter((a) => a.kind === 'chat');
    expect(chats).toHaveLength(2);
    expect(chats[1].at - chats[0].at).toBeGreaterThanOrEqual(950);
  });

  it('answers with the fallback without retrying when a 429 asks to wait longer than MODEL_TIMEOUT_MS', async () => {
    const s = await setup({ chatFailure: 429, retryAfter: '60' }, { MODEL_TIMEOUT_MS: '2000' });
    expect(await s.say({ sender: ALICE, text: 'busy for long?' })).toBe(SAFETY_REPLIES.fallback);
    expect(s.fake.count('chat')).toBe(1);
  });

  it('counts 429 answers towards the breaker: once it is open, messages get the fallback without reaching the model', async () => {
    const s = await setup(
      { chatFailure: 429, retryAfter: '0' },
      { MODEL_BREAKER_FAILURES: '2', MODEL_BREAKER_HALF_OPEN_MS: '60000' },
    );
    expect(await s.say({ sender: ALICE, text: 'rate limited 1' })).toBe(SAFETY_REPLIES.fallback);
    expect(s.fake.count('chat')).toBe(2);
    expect(await s.breaker('model')).toBe(1);
    expect(await s.say({ sender: ALICE, text: 'rate limited 2' })).toBe(SAFETY_REPLIES.fallback);
    expect(s.fake.count('chat')).toBe(2);
  });
});
