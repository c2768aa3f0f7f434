/**
 * Ingest does not wait for processing (README "Conversations and the relay"): events past
 * RELAY_PROCESSING_WINDOW are acknowledged and wait their turn, in order per chat, with their
 * payloads held in memory or read back from the inbox; past RELAY_BACKLOG_MAX a request is
 * refused whole with 429 `relay_backlogged` and `Retry-After`, storing nothing; after a restart
 * the sweep refills a full backlog from the inbox as it drains.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { conversationKeyOf, type RelayEvent } from '../../src/relay/relayEvent.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { type FakeOpenAI, openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, postEvents, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

/** Senders of their own per test file: every chat is a direct chat with Sage. */
const sender = (i: number) => `+1555730${String(i).padStart(4, '0')}`;

let relayToken: string;
beforeAll(async () => {
  relayToken = await token('relay-processing-backlog', { role: 'relay' });
});

/** The value of the /metrics line that starts with `series` (name and labels). */
async function gauge(server: RunningServer, series: string): Promise<number> {
  const metrics = await api(server.url, 'GET', '/metrics');
  const line = metrics.body.split('\n').find((l: string) => l.startsWith(`${series} `));
  return Number(line?.slice(series.length + 1));
}

/** `archety_relay_backlog{state}` from /metrics. */
const backlog = (server: RunningServer, state: 'waiting' | 'processing') =>
  gauge(server, `archety_relay_backlog{state="${state}"}`);

/** A server whose model answers after `chatDelayMs` (processing falls behind ingest), its relay connected. */
async function slowServer(chatDelayMs: number, env: Record<string, string>) {
  const db = await createTestDatabase();
  const fake = await startFakeOpenAI({ chatDelayMs });
  const server = await startTestServer(db.url, openAIEnv(fake, { SENDER_BURST: '1000', ...env }));
  const relay = await connectRelay(server.url, relayToken, { autoAck: true });
  return { db, fake, server, relay };
}

/** The ids each chat's replies answered, in the order the relay received them (first deliveries). */
function repliesByChat(sends: SendFrame[]): Map<string, string[]> {
  const seen = new Set<string>();
  const byChat = new Map<string, string[]>();
  for (const s of sends) {
    if (seen.has(s.id)) continue;
    seen.add(s.id);
    byChat.set(s.chat.guid, [...(byChat.get(s.chat.guid) ?? []), s.replyTo]);
  }
  return byChat;
}

describe('a burst past the processing window', () => {
  let db: TestDatabase;
  let server: RunningServer;
  let relay: RelayClient;
  afterAll(async () => {
    await relay?.close();
    await server?.close();
  });

  it('is acknowledged whole and processed once, in order per chat, payloads held or read back', async () => {
    db = await createTestDatabase();
    server = await startTestServer(db.url, {
      RELAY_PROCESSING_WINDOW: '2',
      RELAY_BACKLOG_MAX: '1000',
      // A few payloads fit in memory; the others are read back from the inbox in their turn.
      RELAY_BACKLOG_HELD_BYTES: '3000',
      SENDER_BURST: '1000',
    });
    relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const chats = 4;
    const perChat = 15;
    const order = new Map<string, string[]>();
    const events = Array.from({ length: chats * perChat }, (_, i) => {
      const e = relayEvent({ sender: sender(i % chats), text: `message ${Math.floor(i / chats)}` });
      const guid = (e.chat as { guid: string }).guid;
      order.set(guid, [...(order.get(guid) ?? []), e.id as string]);
      return e;
    });
    // Three requests at once: each is acknowledged once stored, long before its events are processed.
    const answers = await Promise.all(
      [0, 1, 2].map((k) => postEvents(server.url, relayToken, { events: events.slice(k * 20, k * 20 + 20) })),
    );
    for (const a of answers) {
      expect(a.status).toBe(202);
      expect(a.body.accepted).toHaveLength(20);
    }
    await relay.waitForSends(() => true, events.length, 30_000);
    expect(repliesByChat(relay.sends)).toEqual(order);
    const { rows } = await db.pool.query<{ status: string; n: string }>(
      'SELECT status, count(*) AS n FROM relay_inbox GROUP BY status',
    );
    expect(rows).toEqual([{ status: 'processed', n: String(events.length) }]);
    await expect.poll(() => backlog(server, 'waiting')).toBe(0);
    await expect.poll(() => backlog(server, 'processing')).toBe(0);
  }, 60_000);
});

describe('a full backlog', () => {
  let db: TestDatabase;
  let fake: FakeOpenAI;
  let server: RunningServer;
  let relay: RelayClient;
  afterAll(async () => {
    await relay?.close();
    await server?.close();
    await fake?.close();
  });

  it('refuses a request that would pass RELAY_BACKLOG_MAX whole (429 relay_backlogged, Retry-After), storing nothing, and takes events again once processing caught up', async () => {
    ({ db, fake, server, relay } = await slowServer(3000, { RELAY_PROCESSING_WINDOW: '1', RELAY_BACKLOG_MAX: '100' }));
    const first = Array.from({ length: 100 }, (_, i) => relayEvent({ sender: sender(100 + i), text: 'hello' }));
    const full = await postEvents(server.url, relayToken, { events: first });
    expect(full.status).toBe(202);
    expect(full.body.accepted).toHaveLength(100);

    // One more, over HTTP: refused whole, nothing stored.
    const late = [
      relayEvent({ sender: sender(300), text: 'one too many' }),
      relayEvent({ sender: sender(301), text: 'x' }),
    ];
    const refused = await postEvents(server.url, relayToken, { events: late });
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('relay_backlogged');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // And over the relay socket: an error frame naming the event.
    const onSocket = await relay.event(late[0]);
    expect(onSocket).toMatchObject({ type: 'error', code: 'relay_backlogged', ref: late[0].id });
    const stored = await db.pool.query('SELECT 1 FROM relay_inbox WHERE event_id = ANY($1)', [late.map((e) => e.id)]);
    expect(stored.rowCount).toBe(0);
    const metrics = await api(server.url, 'GET', '/metrics');
    expect(metrics.body).toMatch(/archety_relay_events_total\{outcome="backlogged"\} 3/);
    expect(await backlog(server, 'processing')).toBe(1);
    expect(await backlog(server, 'waiting')).toBe(99);

    // The model speeds up: the backlog drains, and the refused events are taken when sent again.
    fake.behaviour.chatDelayMs = 0;
    await expect.poll(() => backlog(server, 'waiting'), { timeout: 30_000 }).toBe(0);
    const again = await postEvents(server.url, relayToken, { events: late });
    expect(again.status).toBe(202);
    expect(again.body.accepted).toEqual(late.map((e) => e.id));
    await relay.waitForSends(() => true, 102, 30_000);
  }, 60_000);
});

describe('processing gives way to ingest', () => {
  let fake: FakeOpenAI;
  let server: RunningServer;
  let relay: RelayClient;
  afterAll(async () => {
    await relay?.close();
    await server?.close();
    await fake?.close();
  });

  const window = () => gauge(server, 'archety_relay_processing_window');

  it('shrinks the processing window while the event loop is busy and requests keep coming, and widens it again once the loop is calm', async () => {
    // Events wait for the window.
    ({ fake, server, relay } = await slowServer(5000, {
      RELAY_PROCESSING_WINDOW: '64',
      RELAY_BACKLOG_MAX: '10000',
    }));
    const first = Array.from({ length: 100 }, (_, i) => relayEvent({ sender: sender(400 + i), text: 'hello' }));
    expect((await postEvents(server.url, relayToken, { events: first })).status).toBe(202);
    // Whole while nothing presses (a slow first store may halve it for one period).
    await expect.poll(window, { timeout: 5000, interval: 100 }).toBe(64);

    // The loop is kept busy in 2 ms slices (it still answers between them: storing an event stays
    // far below processingShare's SLOW_MS, so only the loop's utilization can shrink the window),
    // while a request comes in every 50 ms.
    let busy = true;
    const spin = () => {
      const until = performance.now() + 2;
      while (performance.now() < until) {}
      if (busy) setImmediate(spin);
    };
    spin();
    const answers: number[] = [];
    let next = 0;
    const posting = setInterval(() => {
      const e = relayEvent({ sender: sender(500 + (next++ % 200)), text: 'while busy' });
      void postEvents(server.url, relayToken, { events: [e] }).then((a) => answers.push(a.status));
    }, 50);
    try {
      // Halved every 250 ms period: 64 → 2 (a 32nd) in five periods.
      await expect.poll(window, { timeout: 10_000, interval: 100 }).toBe(2);
    } finally {
      busy = false;
      clearInterval(posting);
    }
    // Every request made while the loop was busy was acknowledged.
    await expect.poll(() => answers.length, { timeout: 10_000 }).toBe(next);
    expect(answers.every((status) => status === 202)).toBe(true);
    // Calm, with no request coming: the window doubles back to its maximum.
    await expect.poll(window, { timeout: 10_000, interval: 100 }).toBe(64);

    fake.behaviour.chatDelayMs = 0;
    await relay.waitForSends(() => true, first.length + next, 30_000);
  }, 60_000);
});

describe('after a restart', () => {
  it('refills a full backlog from the inbox as it drains, and processes every pending event in order per chat', async () => {
    const db = await createTestDatabase();
    // 150 events stored and never processed (a process died with them), over 5 chats.
    const order = new Map<string, string[]>();
    for (let i = 0; i < 150; i++) {
      const e = {
        ...relayEvent({ sender: sender(500 + (i % 5)), text: `pending ${i}` }),
        attachments: [],
      } as unknown as RelayEvent;
      const guid = e.chat.guid;
      order.set(guid, [...(order.get(guid) ?? []), e.id]);
      await db.pool.query(
        `INSERT INTO relay_inbox (event_id, conversation_key, payload, received_at)
         VALUES ($1, $2, $3, now() - interval '1 minute')`,
        [e.id, conversationKeyOf(e), e],
      );
    }
    const server = await startTestServer(db.url, {
      RELAY_PROCESSING_WINDOW: '5',
      RELAY_BACKLOG_MAX: '100',
      SENDER_BURST: '1000',
      // No periodic sweep within the test: the start's sweep must go on by itself as the backlog drains.
      RELAY_INBOX_SWEEP_MS: '600000',
    });
    try {
      const relay = await connectRelay(server.url, relayToken, { autoAck: true });
      await relay.waitForSends(() => true, 150, 30_000);
      expect(repliesByChat(relay.sends)).toEqual(order);
      await relay.close();
    } finally {
      await server.close();
    }
  }, 60_000);
});
