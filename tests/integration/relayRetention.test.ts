/**
 * Relay retention: processed events lose their attachment data after
 * INBOX_ATTACHMENT_RETENTION_MINUTES and their whole payload after INBOX_RETENTION_HOURS (the
 * event id stays a duplicate), acknowledged sends are deleted after OUTBOX_RETENTION_HOURS.
 * Rows are back-dated in the database; the retention timer runs every 100 ms here.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { connectRelay, outcomeOf, postEvents, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15556300001';
const BOB = '+15556300002';
const PHOTO = Buffer.from('not really a png, but bytes all the same').toString('base64');

let server: RunningServer;
let db: TestDatabase;
let relayToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url, { RELAY_RETENTION_EVERY_MS: '100' });
  relayToken = await token('relay-retention', { role: 'relay' });
});

const payloadOf = async (id: string) =>
  (await db.pool.query('SELECT payload FROM relay_inbox WHERE event_id = $1', [id])).rows[0]?.payload;

const outboxRow = async (id: string) =>
  (await db.pool.query('SELECT status FROM relay_outbox WHERE id = $1', [id])).rows[0] ?? null;

describe('relay retention', () => {
  it('strips a processed event of its attachment data after an hour and of its payload after INBOX_RETENTION_HOURS, and still answers its id as a duplicate', async () => {
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({
      sender: ALICE,
      text: 'here is my secret photo',
      attachments: [{ id: 'att_1', mime: 'image/png', data: PHOTO }],
    });
    const id = e.id as string;
    await postEvents(server.url, relayToken, e);
    await relay.waitForSend((s) => s.replyTo === id);
    expect((await payloadOf(id)).attachments[0].data).toBe(PHOTO);

    await db.pool.query("UPDATE relay_inbox SET processed_at = now() - interval '61 minutes' WHERE event_id = $1", [
      id,
    ]);
    await expect.poll(async () => (await payloadOf(id)).attachments).toEqual([{ id: 'att_1', mime: 'image/png' }]);
    expect((await payloadOf(id)).text).toBe('here is my secret photo');

    await db.pool.query("UPDATE relay_inbox SET processed_at = now() - interval '25 hours' WHERE event_id = $1", [id]);
    await expect.poll(() => payloadOf(id)).toEqual({ id, type: 'message' });
    expect(outcomeOf(id, await postEvents(server.url, relayToken, e))).toBe('duplicate');
    await relay.close();
  });

  it('keeps the payload of events not processed yet, whatever their age', async () => {
    const id = 'evt_retention_pending';
    // Not delivered by the sweep for now: its next attempt is far ahead.
    await db.pool.query(
      `INSERT INTO relay_inbox (event_id, conversation_key, payload, received_at, next_attempt_at, processed_at)
       VALUES ($1, 'user_+15556300003_persona_sage', '{"text":"still to do"}', now() - interval '2 days',
               now() + interval '1 day', now() - interval '2 days')`,
      [id],
    );
    const marker = relayEvent({ sender: BOB, text: 'a marker' });
    await db.pool.query(
      `INSERT INTO relay_inbox (event_id, conversation_key, payload, status, processed_at)
       VALUES ($1, 'user_+15556300002_persona_sage', '{"text":"marker"}', 'processed', now() - interval '2 days')`,
      [marker.id],
    );
    // Once the marker, older than every cutoff, is stripped, a run went over the pending row too.
    await expect.poll(() => payloadOf(marker.id as string)).toEqual({ id: null, type: null });
    expect(await payloadOf(id)).toEqual({ text: 'still to do' });
  });

  it('deletes acknowledged sends after OUTBOX_RETENTION_HOURS and keeps unacknowledged and recent ones', async () => {
    const relay = await connectRelay(server.url, relayToken);
    const old = relayEvent({ sender: BOB, text: 'an old exchange' });
    const unacked = relayEvent({ sender: BOB, text: 'never acknowledged' });
    await postEvents(server.url, relayToken, old);
    const sent = await relay.waitForSend((s) => s.replyTo === old.id);
    relay.ack(sent.id);
    await expect.poll(() => outboxRow(sent.id)).toEqual({ status: 'acked' });
    await postEvents(server.url, relayToken, unacked);
    const pending = await relay.waitForSend((s) => s.replyTo === unacked.id);

    await db.pool.query("UPDATE relay_outbox SET created_at = now() - interval '2 days' WHERE id = $1", [pending.id]);
    await db.pool.query("UPDATE relay_outbox SET acked_at = now() - interval '25 hours' WHERE id = $1", [sent.id]);
    await expect.poll(() => outboxRow(sent.id)).toBeNull();
    expect(await outboxRow(pending.id)).toEqual({ status: 'pending' });
    relay.ack(pending.id);
    await expect.poll(() => outboxRow(pending.id)).toEqual({ status: 'acked' });
    // Acknowledged just now: kept.
    expect(await outboxRow(pending.id)).toEqual({ status: 'acked' });
    await relay.close();
  });
});
