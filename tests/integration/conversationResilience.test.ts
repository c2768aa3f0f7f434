import { describe, expect, it } from 'vitest';
import { SAFETY_REPLIES } from '../../actors/conversationRules.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, postEvents, relayEvent, settleChat, submitFiveTimes } from '../helpers/relay.ts';
import { baseEnv, spawnServer, startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15559000001';
const BOB = '+15559000002';

describe('conversation resilience', () => {
  it('answers with a short fallback when the model fails or hangs, keeps the message, and opens the breaker', async () => {
    const db = await createTestDatabase();
    const fake = await startFakeOpenAI({ chatFailure: 'error' });
    const server = await startTestServer(
      db.url,
      openAIEnv(fake, { MODEL_TIMEOUT_MS: '400', MODEL_BREAKER_FAILURES: '3', MODEL_BREAKER_HALF_OPEN_MS: '60000' }),
    );
    const relayToken = await token('relay-r1', { role: 'relay' });
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const failing = relayEvent({ sender: ALICE, text: 'are you there?' });
    await postEvents(server.url, relayToken, failing);
    expect((await relay.waitForSend((s) => s.replyTo === failing.id)).text).toBe(SAFETY_REPLIES.fallback);

    fake.behaviour.chatFailure = 'hang';
    const hanging = relayEvent({ sender: ALICE, text: 'hello?' });
    await postEvents(server.url, relayToken, hanging);
    // The fake never answers: the reply comes because MODEL_TIMEOUT_MS cut the call (and its one retry).
    expect((await relay.waitForSend((s) => s.replyTo === hanging.id)).text).toBe(SAFETY_REPLIES.fallback);
    expect(fake.promptTexts().filter((p) => p.endsWith('hello?')).length).toBeGreaterThanOrEqual(1);
    expect(fake.promptTexts().filter((p) => p.endsWith('hello?')).length).toBeLessThanOrEqual(2);

    const metrics = await api(server.url, 'GET', '/metrics');
    expect(metrics.body).toMatch(/archety_circuit_breaker_state\{dependency="model"\} 1/);
    const stored = await db.pool.query('SELECT text FROM messages WHERE id = ANY($1)', [
      [`in_${failing.id}`, `in_${hanging.id}`],
    ]);
    expect(stored.rows.map((r) => r.text).sort()).toEqual(['are you there?', 'hello?']);
    await relay.close();
  });

  it('processes the same event sent 5 times at once over HTTP and the socket once, with one reply', async () => {
    const db = await createTestDatabase();
    const fake = await startFakeOpenAI({ chatDelayMs: 100 });
    const server = await startTestServer(db.url, openAIEnv(fake));
    const relayToken = await token('relay-r2', { role: 'relay' });
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: BOB, text: 'only once please q-once' });
    // Exactly one submission stores it; the four others are told it is a duplicate, not an error.
    expect(await submitFiveTimes(server.url, relayToken, relay, e)).toEqual([
      'accepted',
      'duplicate',
      'duplicate',
      'duplicate',
      'duplicate',
    ]);
    await relay.waitForSend((s) => s.replyTo === e.id);
    await settleChat(server.url, relayToken, relay, { sender: BOB });
    expect(relay.sends.filter((s) => s.replyTo === e.id)).toHaveLength(1);
    expect(fake.promptTexts().filter((p) => p.endsWith('q-once'))).toHaveLength(1);
    await relay.close();
  });

  it('redelivers unacknowledged sends on reconnect, in order, until they are acknowledged', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url);
    const relayToken = await token('relay-r3', { role: 'relay' });
    const first = await connectRelay(server.url, relayToken);
    const events = [1, 2, 3].map((i) => relayEvent({ sender: ALICE, text: `message ${i}` }));
    for (const e of events) await postEvents(server.url, relayToken, e);
    await first.waitForSend((s) => s.replyTo === events[2].id);
    expect(first.sends.map((s) => s.replyTo)).toEqual(events.map((e) => e.id));
    await first.close();

    const second = await connectRelay(server.url, relayToken);
    await second.waitForSend((s) => s.replyTo === events[2].id);
    expect(second.sends.map((s) => s.replyTo)).toEqual(events.map((e) => e.id));
    second.ack(second.sends[0].id);
    second.ack(second.sends[1].id);
    await expect
      .poll(async () => (await db.pool.query("SELECT count(*) FROM relay_outbox WHERE status = 'acked'")).rows[0].count)
      .toBe('2');
    await second.close();

    const third = await connectRelay(server.url, relayToken);
    // Sends come in outbox order: once a later reply arrived, no acknowledged one came before it.
    const later = await settleChat(server.url, relayToken, third, { sender: ALICE });
    expect(third.sends.map((s) => s.replyTo)).toEqual([events[2].id, later.replyTo]);
    await third.close();
  });

  it('sends to the most recently connected relay', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url);
    const relayToken = await token('relay-r4', { role: 'relay' });
    const older = await connectRelay(server.url, relayToken, { autoAck: true });
    const newer = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: BOB, text: 'which relay?' });
    await postEvents(server.url, relayToken, e);
    await newer.waitForSend((s) => s.replyTo === e.id);
    expect(older.sends.some((s) => s.replyTo === e.id)).toBe(false);
    await Promise.all([older.close(), newer.close()]);
  });

  it('stores every message of a throttled sender and answers the burst once', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url, {
      SENDER_MESSAGES_PER_MINUTE: '6',
      SENDER_BURST: '2',
      BURST_QUIET_MS: '300',
    });
    const relayToken = await token('relay-r5', { role: 'relay' });
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const burst = Array.from({ length: 8 }, (_, i) => relayEvent({ sender: ALICE, text: `spam ${i}` }));
    for (const e of burst) expect((await postEvents(server.url, relayToken, e)).status).toBe(202);
    await expect
      .poll(async () => (await db.pool.query("SELECT count(*) FROM messages WHERE direction = 'in'")).rows[0].count, {
        timeout: 10_000,
      })
      .toBe('8');
    await relay.waitForSend((s) => s.id.endsWith('_burst'), 10_000);
    // Nothing more can be sent once every event is processed and no answer is owed (sends come
    // only from commits), and all that was sent is in the outbox, acknowledged by the relay.
    const key = `user_${ALICE}_persona_sage`;
    await expect
      .poll(async () => {
        const { rows } = await db.pool.query(
          `SELECT (SELECT count(*) FROM relay_inbox WHERE status = 'pending')::int AS pending,
                  (SELECT jsonb_array_length(snapshot->'context'->'owed') FROM conversations WHERE key = $1) AS owed,
                  (SELECT count(*) FROM relay_outbox WHERE status = 'pending')::int AS unacked`,
          [key],
        );
        return rows[0];
      })
      .toEqual({ pending: 0, owed: 0, unacked: 0 });
    const outbox = await db.pool.query('SELECT payload FROM relay_outbox ORDER BY seq');
    // Two within the limit, then one answer for the rest of the burst.
    expect(outbox.rows.map((r) => r.payload.replyTo)).toEqual([burst[0].id, burst[1].id, burst[7].id]);
    expect(relay.sends).toEqual(outbox.rows.map((r) => r.payload));
    await relay.close();
  });

  it('answers a throttled burst after a crash that came before its quiet time was over', async () => {
    const db = await createTestDatabase();
    const env = baseEnv(db.url, {
      SENDER_MESSAGES_PER_MINUTE: '6',
      SENDER_BURST: '2',
      BURST_QUIET_MS: '2000',
      RELAY_INBOX_SWEEP_MS: '200',
    });
    const first = await spawnServer(env);
    const relayToken = await token('relay-r5b', { role: 'relay' });
    const burst = Array.from({ length: 4 }, (_, i) => relayEvent({ sender: BOB, text: `quick ${i}` }));
    for (const e of burst) expect((await postEvents(first.url, relayToken, e)).status).toBe(202);
    const key = `user_${BOB}_persona_sage`;
    const owed = async () =>
      (
        await db.pool.query(
          `SELECT jsonb_array_length(snapshot->'context'->'owed') AS owed, snapshot->>'value' AS value,
                  owing_since IS NOT NULL AS flagged
             FROM conversations WHERE key = $1 AND version = 4`,
          [key],
        )
      ).rows[0];
    await expect.poll(owed, { interval: 20, timeout: 10_000 }).toEqual({ owed: 1, value: 'owed', flagged: true });
    first.child.kill('SIGKILL');
    await first.exited;
    // Killed while the answer was owed: nothing of it was sent (else this test proves nothing).
    const sent = await db.pool.query('SELECT id FROM relay_outbox ORDER BY seq');
    expect(sent.rows.map((r) => r.id)).toEqual([`out_${burst[0].id}`, `out_${burst[1].id}`]);

    // Nothing arrives for this conversation after the restart: only the sweep can answer it.
    const second = await spawnServer(env);
    const relay = await connectRelay(second.url, relayToken, { autoAck: true });
    const answer = await relay.waitForSend((s) => s.id === `out_${burst[3].id}_burst`, 15_000);
    expect(answer).toMatchObject({ replyTo: burst[3].id, to: BOB });
    await expect.poll(owed, { timeout: 5000 }).toBeUndefined();
    const after = await db.pool.query(
      `SELECT jsonb_array_length(snapshot->'context'->'owed') AS owed, owing_since FROM conversations WHERE key = $1`,
      [key],
    );
    expect(after.rows).toEqual([{ owed: 0, owing_since: null }]);
    expect(relay.sends.filter((s) => s.id.endsWith('_burst'))).toHaveLength(1);
    await relay.close();
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });

  it('delivers the reply once after a crash between the acknowledgement and the reply', async () => {
    const db = await createTestDatabase();
    const fake = await startFakeOpenAI({ chatDelayMs: 4000 });
    const env = baseEnv(db.url, openAIEnv(fake));
    const first = await spawnServer(env);
    const relayToken = await token('relay-r6', { role: 'relay' });
    const e = relayEvent({ sender: BOB, text: 'survive the crash' });
    expect((await postEvents(first.url, relayToken, e)).status).toBe(202);
    await expect.poll(() => fake.chats.length, { timeout: 5000 }).toBeGreaterThan(0);
    first.child.kill('SIGKILL');
    await first.exited;

    fake.behaviour.chatDelayMs = 0;
    const second = await spawnServer(env);
    const relay = await connectRelay(second.url, relayToken, { autoAck: true });
    const send = await relay.waitForSend((s) => s.replyTo === e.id, 15_000);
    expect(send.text).toBe('Model reply to: survive the crash');
    await settleChat(second.url, relayToken, relay, { sender: BOB });
    expect(relay.sends.filter((s) => s.replyTo === e.id)).toHaveLength(1);
    const rows = await db.pool.query('SELECT count(*) FROM messages WHERE id = ANY($1)', [
      [`in_${e.id}`, `out_${e.id}`],
    ]);
    expect(rows.rows[0].count).toBe('2');
    await relay.close();
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });
});

describe('a conversation fenced while it thinks', () => {
  it('answers its event once after the takeover, and the event counts no failed attempt', async () => {
    const db = await createTestDatabase();
    const fake = await startFakeOpenAI({ chatDelayMs: 600 });
    const server = await startTestServer(db.url, openAIEnv(fake, { RELAY_INBOX_SWEEP_MS: '200' }));
    const relayToken = await token('relay-fence', { role: 'relay' });
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const event = relayEvent({ sender: BOB, text: 'plan my week' });
    await postEvents(server.url, relayToken, event);
    // While the model thinks, another owner takes the conversation: its commit is fenced.
    await expect.poll(() => fake.count('chat'), { timeout: 5000 }).toBeGreaterThanOrEqual(1);
    await db.pool.query(
      "UPDATE actor_leases SET epoch = epoch + 1, owner = 'elsewhere' WHERE key LIKE 'conversation:%' AND key LIKE $1",
      [`%${BOB}%`],
    );
    const reply = await relay.waitForSend((s) => s.replyTo === event.id, 10_000);
    expect(reply.text).toBeTruthy();
    const { rows } = await db.pool.query('SELECT status, attempts FROM relay_inbox WHERE event_id = $1', [event.id]);
    expect(rows[0]).toMatchObject({ status: 'processed', attempts: 0 });
    const replies = await db.pool.query("SELECT count(*)::int AS n FROM relay_outbox WHERE payload->>'replyTo' = $1", [
      event.id,
    ]);
    expect(replies.rows[0].n).toBe(1);
  });
});
