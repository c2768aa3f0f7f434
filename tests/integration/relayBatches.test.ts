/**
 * A conversation's relay events that waited behind each other are handed to it together,
 * worked through one after the other (each answered as if it had come alone: the model is
 * shown the batch's earlier messages, replies and memories, not yet written) and committed in
 * one write. Through the real server, the real `openai` client and a local fake OpenAI server.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { type FakeOpenAI, openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, postEvents, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15558100001';
const KEY = `user_${ALICE}_persona_sage`;

let server: RunningServer;
/** The same, with every batch cut short after its first message (RELAY_BATCH_COMMIT_MS=0). */
let cutting: RunningServer;
let cuttingRelay: RelayClient;
let db: TestDatabase;
let fake: FakeOpenAI;
let relay: RelayClient;
let relayToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  fake = await startFakeOpenAI();
  // Batches are never cut short by time here (RELAY_BATCH_COMMIT_MS), so what is batched is known.
  server = await startTestServer(
    db.url,
    openAIEnv(fake, { RELAY_BATCH_COMMIT_MS: '60000', SENDER_MESSAGES_PER_MINUTE: '600', SENDER_BURST: '100' }),
  );
  cutting = await startTestServer(
    db.url,
    openAIEnv(fake, { RELAY_BATCH_COMMIT_MS: '0', SENDER_MESSAGES_PER_MINUTE: '600', SENDER_BURST: '100' }),
  );
  relayToken = await token('relay-batches', { role: 'relay' });
  relay = await connectRelay(server.url, relayToken, { autoAck: true });
  cuttingRelay = await connectRelay(cutting.url, relayToken, { autoAck: true });
});

const figureOf = (metrics: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1]);

describe("a conversation's events that waited behind each other", () => {
  it('are answered in order, each seeing the ones before, and committed together', async () => {
    // One request: the first event goes to its conversation at once, the other three wait
    // behind it and are then handed over together.
    const events = [
      relayEvent({ sender: ALICE, text: 'I love sailing' }),
      relayEvent({ sender: ALICE, text: 'I live in Lisbon' }),
      relayEvent({ sender: ALICE, text: 'Tell me something about the tides' }),
      relayEvent({ sender: ALICE, text: 'q-batch-last what should we do this weekend?' }),
    ];
    const res = await postEvents(server.url, relayToken, { events });
    expect(res.status).toBe(202);
    const sends = await relay.waitForSends((s) => events.some((e) => e.id === s.replyTo), 4);
    // Replies go out in the order of the messages they answer.
    expect(sends.map((s) => s.replyTo)).toEqual(events.map((e) => e.id));

    // The last message's prompt: the memory of the first batch (written), the memory and the
    // turns of the messages before it in its own batch (not written yet when it was answered).
    const last = fake.promptFor('q-batch-last');
    expect(last).toMatch(/loves sailing/);
    expect(last).toMatch(/lives in Lisbon/);
    expect(last).toContain('Tell me something about the tides');
    expect(last).toContain(sends[2].text);

    const metrics = (await api(server.url, 'GET', '/metrics')).body;
    expect(figureOf(metrics, 'archety_conversation_commit_messages_count')).toBe(2);
    expect(figureOf(metrics, 'archety_conversation_commit_messages_sum')).toBe(4);
    // One memory read per message: the first alone, the other three read ahead together.
    expect(figureOf(metrics, 'archety_memory_recalls_total')).toBe(4);

    const { rows } = await db.pool.query(
      `SELECT (SELECT version FROM conversations WHERE key = $1)::int AS version,
              (SELECT count(*) FROM messages WHERE conversation_key = $1)::int AS messages,
              (SELECT count(*) FROM memories WHERE container_tag = $1)::int AS memories,
              (SELECT count(*) FROM relay_outbox WHERE conversation_key = $1)::int AS sends,
              (SELECT counters FROM relationship_state WHERE user_id = $2) AS counters,
              (SELECT array_agg(DISTINCT status) FROM relay_inbox WHERE conversation_key = $1) AS inbox`,
      [KEY, ALICE],
    );
    expect(rows[0]).toEqual({
      version: 4,
      messages: 8,
      memories: 2,
      sends: 4,
      counters: { messages: 4, replies: 4, photos: 0 },
      inbox: ['processed'],
    });
  });
});

describe('a batch cut short by its time bound', () => {
  it('leaves its rest the reads made ahead, with the memories committed since: one read per message', async () => {
    const bob = '+15558100002';
    const events = [
      relayEvent({ sender: bob, text: 'I love sailing' }),
      relayEvent({ sender: bob, text: 'I live in Lisbon' }),
      relayEvent({ sender: bob, text: 'I love tides' }),
      relayEvent({ sender: bob, text: 'q-cut-last what should we do this weekend?' }),
    ];
    const res = await postEvents(cutting.url, relayToken, { events });
    expect(res.status).toBe(202);
    const sends = await cuttingRelay.waitForSends((s) => events.some((e) => e.id === s.replyTo), 4);
    expect(sends.map((s) => s.replyTo)).toEqual(events.map((e) => e.id));

    // Every message committed alone (the bound is 0 ms), yet its memories were read once: the
    // first alone, the other three together ahead of their batch, whose rest kept them.
    const metrics = (await api(cutting.url, 'GET', '/metrics')).body;
    expect(figureOf(metrics, 'archety_conversation_commit_messages_count')).toBe(4);
    expect(figureOf(metrics, 'archety_conversation_commit_messages_sum')).toBe(4);
    expect(figureOf(metrics, 'archety_memory_recalls_total')).toBe(4);

    // The last message's memories were read before the second and third were committed: what
    // they added is shown all the same, as a read made after them would show it.
    const last = fake.promptFor('q-cut-last');
    expect(last).toMatch(/loves sailing/);
    expect(last).toMatch(/lives in Lisbon/);
    expect(last).toMatch(/loves tides/);
  });
});
