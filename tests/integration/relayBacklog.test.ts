/**
 * Exactly once under backlog, and outbox delivery in windows (docs/protocol.md "Exactly once under
 * backlog"; README "Conversations and the relay"): a second processing of an event commits
 * nothing, sweeps never overlap, new events are acknowledged while conversation commits are held
 * up (the inbox's own group-commit lane), a relay returning to a large backlog gets all of it in order
 * per chat without being dropped, and memory stays bounded while no relay is connected.
 * The 100,000-send variant belongs to the longer hostile run; 20,000 here.
 */
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { ConversationCommit } from '../../actors/conversationTypes.ts';
import type { ActorHost } from '../../src/host/createActorHost.ts';
import type { RateLimiter } from '../../src/limits/RateLimiter.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createMetrics } from '../../src/observability/metrics.ts';
import { RelayIngest } from '../../src/relay/RelayIngest.ts';
import type { RelayEventSchema } from '../../src/relay/relayEvent.ts';
import type { RunningServer } from '../../src/server.ts';
import { ConversationRepository, encodeWrite } from '../../src/store/conversationRepository.ts';
import { FENCED, type GroupCommitter } from '../../src/store/GroupCommitter.ts';
import type { PendingInbox, RelayRepository } from '../../src/store/relayRepository.ts';
import { commitOf as commitFor, pendingInboxRow as insertPendingRow } from '../helpers/conversationCommit.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, postEvents, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15556400001';

const commitOf = (id: string, seq: number, version: number, sender = ALICE) => commitFor(id, seq, version, sender);

let db: TestDatabase;
const pendingInboxRow = (id: string, key: string) => insertPendingRow(db.pool, id, key);
let relayToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  relayToken = await token('relay-backlog', { role: 'relay' });
});

/** What conversation `key` has stored: its version, its rows' counts, its inbox rows' statuses in order. */
async function conversationRows(key: string) {
  const { rows } = await db.pool.query(
    `SELECT (SELECT version FROM conversations WHERE key = $1)::int AS version,
            (SELECT count(*) FROM messages WHERE conversation_key = $1)::int AS messages,
            (SELECT count(*) FROM memories WHERE container_tag = $1)::int AS memories,
            (SELECT count(*) FROM relay_outbox WHERE conversation_key = $1)::int AS sends,
            (SELECT array_agg(status ORDER BY seq) FROM relay_inbox WHERE conversation_key = $1) AS inbox`,
    [key],
  );
  return rows[0];
}

describe('exactly once under backlog', () => {
  it('commits nothing for an event whose inbox row is no longer pending, and reports it not applied', async () => {
    const server = await startTestServer(db.url);
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: ALICE, text: 'I love durian' });
    const id = e.id as string;
    await postEvents(server.url, relayToken, e);
    await relay.waitForSend((s) => s.replyTo === id);
    await relay.close();
    const key = `user_${ALICE}_persona_sage`;
    const state = async () =>
      (
        await db.pool.query(
          `SELECT (SELECT version FROM conversations WHERE key = $1)::int AS version,
                  (SELECT count(*) FROM memories WHERE container_tag = $1)::int AS memories,
                  (SELECT counters FROM relationship_state WHERE user_id = $2) AS counters,
                  (SELECT count(*) FROM relay_outbox WHERE conversation_key = $1)::int AS sends`,
          [key, ALICE],
        )
      ).rows[0];
    const before = await state();
    const { seq } = (await db.pool.query('SELECT seq FROM relay_inbox WHERE event_id = $1', [id])).rows[0];

    // The same event processed a second time (a redelivery the actor's window missed).
    const repo = new ConversationRepository(db.pool);
    const write = async (commit: ConversationCommit) => {
      const client = await db.pool.connect();
      try {
        await client.query('BEGIN');
        const result = await repo.writeBatch(client, [encodeWrite([commit], {})], null);
        await client.query('COMMIT');
        return result;
      } finally {
        client.release();
      }
    };
    expect(await write(commitOf(id, Number(seq), before.version + 1))).toEqual([false]);
    expect(await state()).toEqual(before);

    // A pending row is committed as before.
    const fresh = 'evt_backlog_pending_row';
    const inserted = await db.pool.query(
      `INSERT INTO relay_inbox (event_id, conversation_key, payload, received_at)
       VALUES ($1, $2, '{}', now() + interval '1 hour') RETURNING seq`,
      [fresh, key],
    );
    expect(await write(commitOf(fresh, Number(inserted.rows[0].seq), before.version + 1))).toEqual([true]);
    const after = await state();
    expect([after.version, after.memories, after.sends]).toEqual([
      before.version + 1,
      before.memories + 1,
      before.sends + 1,
    ]);
    expect((await db.pool.query('SELECT status FROM relay_inbox WHERE event_id = $1', [fresh])).rows[0].status).toBe(
      'processed',
    );
    await server.close();
  });

  it('fences a batch committed as one statement: nothing of a commit whose epoch moved on, its inbox row left pending', async () => {
    const sender = '+15556400002';
    const key = `user_${sender}_persona_sage`;
    const lease = `conversation:${key}`;
    await db.pool.query("INSERT INTO actor_leases (key, epoch, owner) VALUES ($1, 3, 'here')", [lease]);
    const inbox = (id: string) => pendingInboxRow(id, key);
    const repo = new ConversationRepository(db.pool);
    // As the group committer runs it: no transaction around it, the fence given.
    const write = async (commit: ConversationCommit, epoch: number) => {
      const client = await db.pool.connect();
      try {
        const result = await repo.writeBatch(client, [encodeWrite([commit], {})], { keys: [lease], epochs: [epoch] });
        expect(client.getTransactionStatus()).toBe('I');
        return result;
      } finally {
        client.release();
      }
    };
    const stored = () => conversationRows(key);

    const first = await inbox('evt_fenced_1');
    expect(await write(commitOf('evt_fenced_1', first, 1, sender), 3)).toEqual([true]);
    expect(await stored()).toEqual({ version: 1, messages: 2, memories: 1, sends: 1, inbox: ['processed'] });

    // Another owner took the conversation (epoch 4): the commit of epoch 3 is fenced, whole.
    await db.pool.query('UPDATE actor_leases SET epoch = 4 WHERE key = $1', [lease]);
    const second = await inbox('evt_fenced_2');
    expect(await write(commitOf('evt_fenced_2', second, 2, sender), 3)).toEqual([FENCED]);
    expect(await stored()).toEqual({ version: 1, messages: 2, memories: 1, sends: 1, inbox: ['processed', 'pending'] });

    // The new owner's commit of it goes through; the old one's again is still fenced, a repeat not applied.
    expect(await write(commitOf('evt_fenced_2', second, 2, sender), 4)).toEqual([true]);
    expect(await write(commitOf('evt_fenced_2', second, 3, sender), 3)).toEqual([FENCED]);
    expect(await write(commitOf('evt_fenced_2', second, 3, sender), 4)).toEqual([false]);
    expect(await stored()).toEqual({
      version: 2,
      messages: 4,
      memories: 2,
      sends: 2,
      inbox: ['processed', 'processed'],
    });
  });

  it("writes a conversation's batch of commits whole, and only while every inbox row of it is pending", async () => {
    const sender = '+15556400003';
    const key = `user_${sender}_persona_sage`;
    const lease = `conversation:${key}`;
    await db.pool.query("INSERT INTO actor_leases (key, epoch, owner) VALUES ($1, 1, 'here')", [lease]);
    const inbox = (id: string) => pendingInboxRow(id, key);
    const repo = new ConversationRepository(db.pool);
    // Both statements: in a transaction without a fence, and fencing itself.
    const write = async (commits: ConversationCommit[], fenced: boolean) => {
      const client = await db.pool.connect();
      try {
        const fence = fenced ? { keys: [lease], epochs: [1] } : null;
        return await repo.writeBatch(client, [encodeWrite(commits, {})], fence);
      } finally {
        client.release();
      }
    };
    const stored = async () => ({
      ...(await conversationRows(key)),
      counters: (await db.pool.query('SELECT counters FROM relationship_state WHERE user_id = $1', [sender])).rows[0]
        ?.counters,
    });
    for (const fenced of [false, true]) {
      const tag = fenced ? 'f' : 'u';
      const base = (await stored()).version ?? 0;
      const seqs = [await inbox(`evt_b${tag}1`), await inbox(`evt_b${tag}2`), await inbox(`evt_b${tag}3`)];
      const batch = seqs.map((seq, i) => commitOf(`evt_b${tag}${i + 1}`, seq, base + i + 1, sender));
      expect(await write(batch.slice(0, 1), fenced)).toEqual([true]);
      const before = await stored();
      // Its first row was processed already (a redelivery): nothing of the batch is written.
      expect(await write(batch, fenced)).toEqual([false]);
      expect(await stored()).toEqual(before);
      // The rest, as a batch: all of it, one relationship row counting both messages.
      expect(await write(batch.slice(1), fenced)).toEqual([true]);
      const after = await stored();
      expect(after).toMatchObject({
        version: base + 3,
        messages: before.messages + 4,
        memories: before.memories + 2,
        sends: before.sends + 2,
      });
      expect(after.counters.messages).toBe(before.counters.messages + 2);
      expect(after.inbox.slice(-3)).toEqual(['processed', 'processed', 'processed']);
    }
  });

  it('never starts a sweep while the previous one is still running', async () => {
    vi.useFakeTimers();
    try {
      let calls = 0;
      let release: (rows: PendingInbox[]) => void = () => {};
      const repo = {
        pendingInbox: () => {
          calls++;
          return new Promise<PendingInbox[]>((r) => {
            release = r;
          });
        },
      } as unknown as RelayRepository;
      const ingest = new RelayIngest({
        committer: { register: () => {} } as unknown as GroupCommitter,
        repo,
        host: {} as ActorHost,
        schema: {} as RelayEventSchema,
        senders: {} as RateLimiter,
        metrics: createMetrics({
          pool: () => ({ total: 0, idle: 0, waiting: 0 }),
          actors: () => ({}),
          sockets: () => ({}),
        }),
        log: createLogger({ level: 'silent', format: 'json' }),
        sweepEveryMs: 100,
        maxAttempts: 5,
        retryBackoffMs: 100,
        window: 10,
        batchEvents: 16,
        backlogMax: 100,
        heldBytesMax: 1 << 20,
        owing: async () => [],
        burstQuietMs: 100,
      });
      ingest.start();
      await vi.advanceTimersByTimeAsync(1000);
      expect(calls).toBe(1);
      release([]);
      await vi.advanceTimersByTimeAsync(100);
      expect(calls).toBe(2);
      ingest.stop();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('acknowledging while processing is held up', () => {
  it('acknowledges new events while every conversation commit waits on a lock, and answers them all once it is gone', async () => {
    const server = await startTestServer(db.url);
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    // One event answered first: the group commit's lanes hold their connections and the relay's
    // backlog is delivered, so nothing below waits for a pool connection behind the lock.
    const warm = relayEvent({ sender: '+15556400100', text: 'warming up' });
    await postEvents(server.url, relayToken, warm);
    await relay.waitForSend((s) => s.replyTo === warm.id);
    const locker = await db.pool.connect();
    try {
      await locker.query('BEGIN');
      // Conversation commits write the outbox; acknowledging an event never touches it.
      await locker.query('LOCK TABLE relay_outbox IN ACCESS EXCLUSIVE MODE');
      const first = relayEvent({ sender: '+15556400101', text: 'first, held up' });
      expect((await postEvents(server.url, relayToken, first)).status).toBe(202);
      const waitingOnTheLock = async () =>
        (
          await db.pool.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = $1 AND wait_event_type = 'Lock'
                AND (query LIKE 'WITH pending AS%' OR query LIKE 'UPDATE relay_outbox SET status%')`,
            [db.name],
          )
        ).rows[0].n;
      // The shared lane's transaction waits on the lock: the conversation's commit, or the
      // update of an acknowledged send (the outbox too) ahead of it in the same lane.
      await expect.poll(waitingOnTheLock, { timeout: 10_000 }).toBeGreaterThan(0);
      // The group commit's transaction of conversations is stuck: new events are stored and
      // acknowledged all the same, in their own lane.
      const later = [2, 3, 4, 5].map((n) => relayEvent({ sender: `+1555640010${n}`, text: `number ${n}` }));
      const started = Date.now();
      const answers = await Promise.all(later.map((e) => postEvents(server.url, relayToken, e)));
      expect(answers.map((a) => a.status)).toEqual([202, 202, 202, 202]);
      expect(Date.now() - started, 'ms to acknowledge while commits are held up').toBeLessThan(5000);
      const ours = new Set([first, ...later].map((e) => e.id));
      expect(
        relay.sends.filter((send) => ours.has(send.replyTo)),
        'replies while commits are held up',
      ).toEqual([]);
      await locker.query('ROLLBACK');
      for (const e of [first, ...later]) await relay.waitForSend((s) => s.replyTo === e.id);
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      locker.release();
      await relay.close();
      await server.close();
    }
  });
});

describe('outbox delivery in windows', () => {
  /** 20,000 in `npm test`; `npm run test:backlog` runs it with the 100,000 of the contract. */
  const SENDS = Number(process.env.RELAY_BACKLOG_SENDS ?? 20_000);
  const CHATS = 200;

  /** SENDS pending sends, round-robin over CHATS group chats, each about 300 bytes as a frame. */
  async function insertBacklog(database: TestDatabase): Promise<void> {
    await database.pool.query(
      `INSERT INTO relay_outbox (id, chat, conversation_key, payload)
       SELECT 'out_bk_' || i, 'chat_' || (i % $2), 'group_chat_' || (i % $2),
              jsonb_build_object('type', 'send', 'id', 'out_bk_' || i, 'replyTo', 'bk_' || i,
                                 'chat', jsonb_build_object('guid', 'chat_' || (i % $2), 'group', true),
                                 'text', repeat('x', 200) || ' #' || i)
         FROM generate_series(1, $1) AS i ORDER BY i`,
      [SENDS, CHATS],
    );
  }

  it('feeds a relay returning to a large backlog all of it, in order per chat, without dropping its socket', {
    timeout: Math.max(30_000, SENDS * 2),
  }, async () => {
    const database = await createTestDatabase();
    const server = await startTestServer(database.url);
    await insertBacklog(database);
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    let closed: number | null = null;
    relay.ws.on('close', (code) => {
      closed = code;
    });
    const seen = new Set<string>();
    await expect
      .poll(
        () => {
          for (const s of relay.sends) seen.add(s.id);
          if (closed !== null) throw new Error(`the relay socket was closed (${closed}) after ${seen.size} sends`);
          return seen.size;
        },
        { timeout: Math.max(20_000, SENDS * 1.5), interval: 100 },
      )
      .toBe(SENDS);
    // In order per chat: each chat's first deliveries come in outbox order.
    const firsts = new Map<string, number[]>();
    const once = new Set<string>();
    for (const s of relay.sends) {
      if (once.has(s.id)) continue;
      once.add(s.id);
      firsts.set(s.chat.guid, [...(firsts.get(s.chat.guid) ?? []), Number(s.replyTo.slice(3))]);
    }
    for (const ns of firsts.values()) expect(ns).toEqual([...ns].sort((a, b) => a - b));
    await expect
      .poll(async () =>
        Number((await database.pool.query("SELECT count(*) FROM relay_outbox WHERE status = 'pending'")).rows[0].count),
      )
      .toBe(0);
    expect(closed).toBeNull();
    await relay.close();
    await server.close();
  });

  it('holds a bounded number of sends in memory while no relay is connected, and delivers them all on connect', async () => {
    const database = await createTestDatabase();
    const server: RunningServer = await startTestServer(database.url, { RELAY_SEND_WINDOW: '20' });
    const EVENTS = 100;
    const events = Array.from({ length: EVENTS }, (_, i) =>
      relayEvent({ sender: `+1555641${String(i).padStart(4, '0')}`, text: `hello ${i}` }),
    );
    expect((await postEvents(server.url, relayToken, { events })).status).toBe(202);
    await expect
      .poll(async () => Number((await database.pool.query('SELECT count(*) FROM relay_outbox')).rows[0].count), {
        timeout: 15_000,
      })
      .toBe(EVENTS);
    const inMemory = async () => {
      const text = (await api(server.url, 'GET', '/metrics')).body as string;
      const line = text.split('\n').find((l) => l.startsWith('archety_relay_sends_in_memory '));
      return line === undefined ? undefined : Number(line.split(' ')[1]);
    };
    const held = await inMemory();
    expect(held).toBeDefined();
    expect(held).toBeLessThanOrEqual(40);

    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    for (const e of events) await relay.waitForSend((s) => s.replyTo === e.id);
    expect(await inMemory()).toBeLessThanOrEqual(40);
    await relay.close();
    await server.close();
  });
});
