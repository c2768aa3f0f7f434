/**
 * The relay's delivery guarantees, through the real server: an event id stays a duplicate
 * across a restart, a reply's outbox row is committed with its messages, unacknowledged sends
 * are delivered again, and inbox rows left pending are swept to their conversation.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { conversationKeyOf, type RelayEvent } from '../../src/relay/relayEvent.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { connectRelay, outcomeOf, postEvents, relayEvent, settleChat } from '../helpers/relay.ts';
import { baseEnv, spawnServer, startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15556100001';
const BOB = '+15556100002';
const CAROL = '+15556100003';
const DAVE = '+15556100004';
const ERIN = '+15556100005';

let server: RunningServer;
let db: TestDatabase;
let relayToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url, {
    // Long enough that a loaded machine (CI runs test files in parallel on 2 cores) acknowledges
    // every send before it is due again: the tests that count one send per reply would otherwise
    // see a legitimate redelivery (at 300 ms one showed up once, in stop 33's CI run).
    RELAY_REDELIVER_MS: '1000',
    RELAY_INBOX_SWEEP_MS: '200',
    // An event that failed is retried soon and often here (the poison test counts its failures).
    RELAY_RETRY_BACKOFF_MS: '100',
    RELAY_MAX_ATTEMPTS: '20',
  });
  relayToken = await token('relay-delivery', { role: 'relay' });
});

/** What is stored of event `id`: its two messages, its reply's outbox row, its inbox row's status. */
async function storedOf(database: TestDatabase, id: string) {
  const { rows } = await database.pool.query(
    `SELECT (SELECT count(*) FROM messages WHERE id IN ($1, $2))::int AS messages,
            (SELECT count(*) FROM relay_outbox WHERE id = $2)::int AS outbox,
            (SELECT count(*) FROM relay_inbox WHERE event_id = $3)::int AS "inboxRows",
            (SELECT status FROM relay_inbox WHERE event_id = $3) AS inbox`,
    [`in_${id}`, `out_${id}`, id],
  );
  return rows[0];
}

describe('relay delivery', () => {
  it('answers an event id sent again after a restart as a duplicate and processes it once', async () => {
    const db1 = await createTestDatabase();
    const env = baseEnv(db1.url);
    const first = await spawnServer(env);
    const relay1 = await connectRelay(first.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: ALICE, text: 'remember this one after the restart' });
    const id = e.id as string;
    expect(outcomeOf(id, await postEvents(first.url, relayToken, e))).toBe('accepted');
    await relay1.waitForSend((s) => s.replyTo === id);
    // Acknowledged, so the restarted server has nothing of it left to deliver.
    await expect
      .poll(async () => (await db1.pool.query('SELECT status FROM relay_outbox WHERE id = $1', [`out_${id}`])).rows)
      .toEqual([{ status: 'acked' }]);
    first.child.kill('SIGKILL');
    await first.exited;

    const second = await spawnServer(env);
    const relay2 = await connectRelay(second.url, relayToken, { autoAck: true });
    const again = [
      await postEvents(second.url, relayToken, e),
      await relay2.event(e),
      await postEvents(second.url, relayToken, { events: [e] }),
    ];
    expect(again.map((a) => outcomeOf(id, a))).toEqual(['duplicate', 'duplicate', 'duplicate']);
    await settleChat(second.url, relayToken, relay2, { sender: ALICE });
    expect([...relay1.sends, ...relay2.sends].filter((s) => s.replyTo === id)).toHaveLength(1);
    expect(await storedOf(db1, id)).toEqual({ messages: 2, outbox: 1, inboxRows: 1, inbox: 'processed' });
    await relay2.close();
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });

  it('commits a reply to the outbox in the same transaction as its messages: a failed commit stores neither, and the sweep processes the event later', async () => {
    // Rows listed in `poison` make the transaction that inserts them fail at COMMIT (a deferred
    // constraint trigger), after every statement in it ran. `poison_hits` counts the failures:
    // a sequence, so the rollback does not undo the count.
    await db.pool.query(`
      CREATE SEQUENCE poison_hits;
      CREATE TABLE poison (tbl text, id text);
      CREATE FUNCTION poisoned() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF EXISTS (SELECT 1 FROM poison WHERE tbl = TG_TABLE_NAME AND id = NEW.id) THEN
          PERFORM nextval('poison_hits');
          RAISE EXCEPTION 'poisoned % %', TG_TABLE_NAME, NEW.id;
        END IF;
        RETURN NULL;
      END $$;
      CREATE CONSTRAINT TRIGGER poison_messages AFTER INSERT ON messages
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION poisoned();
      CREATE CONSTRAINT TRIGGER poison_outbox AFTER INSERT ON relay_outbox
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION poisoned();`);
    const hits = async () =>
      Number(
        (await db.pool.query('SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM poison_hits')).rows[0].n,
      );
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    // Failing the messages' commit catches an outbox row committed before it, on its own;
    // failing the outbox row's commit catches messages committed before it, on their own.
    for (const [table, sender] of [
      ['messages', BOB],
      ['relay_outbox', CAROL],
    ]) {
      const e = relayEvent({ sender, text: `a reply that cannot be stored in ${table}` });
      const id = e.id as string;
      await db.pool.query('INSERT INTO poison VALUES ($1, $2)', [table, `out_${id}`]);
      const before = await hits();
      expect(outcomeOf(id, await postEvents(server.url, relayToken, e))).toBe('accepted');
      const nothingStored = { messages: 0, outbox: 0, inboxRows: 1, inbox: 'pending' };
      await expect.poll(hits, { timeout: 10_000 }).toBeGreaterThan(before);
      expect(await storedOf(db, id), table).toEqual(nothingStored);
      // Delivered again by the sweep (the conversation stopped), and failed again.
      await expect.poll(hits, { timeout: 10_000 }).toBeGreaterThanOrEqual(before + 2);
      expect(await storedOf(db, id), table).toEqual(nothingStored);
      expect(relay.sends.some((s) => s.replyTo === id)).toBe(false);

      await db.pool.query('DELETE FROM poison');
      await relay.waitForSend((s) => s.replyTo === id);
      expect(await storedOf(db, id), table).toEqual({ messages: 2, outbox: 1, inboxRows: 1, inbox: 'processed' });
      await settleChat(server.url, relayToken, relay, { sender });
      expect(relay.sends.filter((s) => s.replyTo === id)).toHaveLength(1);
    }
    await relay.close();
  });

  it('delivers a send again every RELAY_REDELIVER_MS until the relay acknowledges it, and not after', async () => {
    const relay = await connectRelay(server.url, relayToken);
    const e = relayEvent({ sender: DAVE, text: 'did you get this?' });
    await postEvents(server.url, relayToken, e);
    const [sent, again] = await relay.waitForSends((s) => s.replyTo === e.id, 2);
    expect(again).toEqual(sent);
    relay.ack(sent.id);
    await expect
      .poll(async () => (await db.pool.query('SELECT status FROM relay_outbox WHERE id = $1', [sent.id])).rows)
      .toEqual([{ status: 'acked' }]);

    // A later send, left unacknowledged, is delivered again: the redelivery ran after the ack,
    // and every frame it could still send for the acknowledged one would follow the later one.
    const later = relayEvent({ sender: DAVE, text: 'and this?' });
    await postEvents(server.url, relayToken, later);
    await relay.waitForSends((s) => s.replyTo === later.id, 2);
    const laterFirst = relay.sends.findIndex((s) => s.replyTo === later.id);
    expect(relay.sends.slice(laterFirst).filter((s) => s.replyTo === e.id)).toEqual([]);
    relay.ack(`out_${later.id}`);
    await relay.close();
  });

  it('processes an inbox row left pending without a restart, through the periodic sweep', async () => {
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    // Stored as the ingest stores it, but never handed to the conversation: only the sweep can.
    const e = relayEvent({ sender: ERIN, text: 'left behind' });
    const id = e.id as string;
    const stored = { ...e, persona: 'sage', attachments: [] } as unknown as RelayEvent;
    await db.pool.query('INSERT INTO relay_inbox (event_id, conversation_key, payload) VALUES ($1, $2, $3)', [
      id,
      conversationKeyOf(stored),
      JSON.stringify(stored),
    ]);
    await relay.waitForSend((s) => s.replyTo === id);
    expect(await storedOf(db, id)).toEqual({ messages: 2, outbox: 1, inboxRows: 1, inbox: 'processed' });
    await relay.close();
  });
});
