/**
 * An event whose processing always fails is retried with backoff, marked failed after
 * RELAY_MAX_ATTEMPTS, counted in /metrics, listed by `GET /v1/admin/failed-events` and
 * processed again after `POST /v1/admin/failed-events/:id/retry` (docs/protocol.md "Exactly once
 * under backlog").
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, outcomeOf, postEvents, relayEvent } from '../helpers/relay.ts';
import { startLoggedServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15556200001';
const BOB = '+15556200002';
const MAX_ATTEMPTS = 3;

let server: RunningServer;
let lines: string[];
let db: TestDatabase;
let relayToken: string;
let adminToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  ({ server, lines } = await startLoggedServer(db.url, {
    RELAY_INBOX_SWEEP_MS: '100',
    RELAY_RETRY_BACKOFF_MS: '50',
    RELAY_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
  }));
  relayToken = await token('relay-admin', { role: 'relay' });
  adminToken = await token('admin-1', { role: 'admin' });
  // Inserting a message listed in `poison` fails its whole commit: the conversation stops.
  await db.pool.query(`
    CREATE TABLE poison (id text PRIMARY KEY);
    CREATE FUNCTION poisoned() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM poison WHERE id = NEW.id) THEN RAISE EXCEPTION 'poisoned message'; END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER poison_messages BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION poisoned();`);
});

const inboxOf = async (id: string) =>
  (
    await db.pool.query(
      'SELECT status, attempts, next_attempt_at IS NOT NULL AS "backedOff" FROM relay_inbox WHERE event_id = $1',
      [id],
    )
  ).rows[0];

const metric = async (name: string) => {
  const text = (await api(server.url, 'GET', '/metrics')).body as string;
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : undefined;
};

describe('relay events that keep failing', () => {
  it('retries a failing event with backoff, marks it failed after RELAY_MAX_ATTEMPTS, lists it for admins, and processes it once retried', async () => {
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: ALICE, text: 'this one cannot be stored yet' });
    const id = e.id as string;
    await db.pool.query('INSERT INTO poison VALUES ($1)', [`in_${id}`]);
    expect(outcomeOf(id, await postEvents(server.url, relayToken, e))).toBe('accepted');

    await expect.poll(() => inboxOf(id), { timeout: 15_000 }).toMatchObject({ status: 'failed' });
    expect(await inboxOf(id)).toEqual({ status: 'failed', attempts: MAX_ATTEMPTS, backedOff: true });
    // Failed means left alone: no further attempt is made.
    const later = relayEvent({ sender: BOB, text: 'meanwhile, others are answered' });
    await postEvents(server.url, relayToken, later);
    await relay.waitForSend((s) => s.replyTo === later.id);
    expect((await inboxOf(id)).attempts).toBe(MAX_ATTEMPTS);
    expect(await metric('archety_relay_events_failed_total')).toBe(1);
    expect(await metric('archety_relay_event_attempts_failed_total')).toBe(MAX_ATTEMPTS);
    // Its line names it, so the logs can be searched for the id the admin list shows.
    const failedLines = lines.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith('a relay event failed every'));
    expect(failedLines).toEqual([expect.objectContaining({ reqId: id, attempts: MAX_ATTEMPTS })]);

    const list = await api(server.url, 'GET', '/v1/admin/failed-events', { token: adminToken });
    expect(list.status).toBe(200);
    expect(list.body.events).toEqual([
      expect.objectContaining({ id, conversationKey: `user_${ALICE}_persona_sage`, attempts: MAX_ATTEMPTS }),
    ]);
    expect(list.body.next).toBeNull();

    await db.pool.query('DELETE FROM poison');
    const retried = await api(server.url, 'POST', `/v1/admin/failed-events/${encodeURIComponent(id)}/retry`, {
      token: adminToken,
    });
    expect(retried.status).toBe(202);
    expect(retried.body).toEqual({ id, status: 'pending' });
    await relay.waitForSend((s) => s.replyTo === id);
    await expect.poll(() => inboxOf(id)).toMatchObject({ status: 'processed' });
    expect((await api(server.url, 'GET', '/v1/admin/failed-events', { token: adminToken })).body.events).toEqual([]);
    await relay.close();
  });

  it('pages the failed events with limit and next', async () => {
    const ids = ['evt_failed_page_1', 'evt_failed_page_2', 'evt_failed_page_3'];
    for (const id of ids) {
      await db.pool.query(
        `INSERT INTO relay_inbox (event_id, conversation_key, payload, status, attempts, processed_at)
         VALUES ($1, 'user_+15556200009_persona_sage', '{}', 'failed', 5, now())`,
        [id],
      );
    }
    const first = await api(server.url, 'GET', '/v1/admin/failed-events?limit=2', { token: adminToken });
    expect(first.body.events.map((e: { id: string }) => e.id)).toEqual(ids.slice(0, 2));
    const second = await api(server.url, 'GET', `/v1/admin/failed-events?limit=2&after=${first.body.next}`, {
      token: adminToken,
    });
    expect(second.body).toEqual({ events: [expect.objectContaining({ id: ids[2] })], next: null });
    await db.pool.query('DELETE FROM relay_inbox WHERE event_id = ANY($1)', [ids]);
  });

  it('refuses the admin routes without a token (401) and to user and relay tokens (403)', async () => {
    const user = await token(ALICE);
    const retry = '/v1/admin/failed-events/evt_x/retry';
    expect((await api(server.url, 'GET', '/v1/admin/failed-events')).body.error.code).toBe(Codes.unauthorized);
    expect((await api(server.url, 'POST', retry)).status).toBe(401);
    for (const t of [user, relayToken]) {
      const list = await api(server.url, 'GET', '/v1/admin/failed-events', { token: t });
      expect([list.status, list.body.error.code]).toEqual([403, Codes.forbidden]);
      const post = await api(server.url, 'POST', retry, { token: t });
      expect([post.status, post.body.error.code]).toEqual([403, Codes.forbidden]);
    }
  });

  it('answers 404 failed_event_not_found to a retry of an unknown or not failed event, and 400 to a bad id or paging', async () => {
    const unknown = await api(server.url, 'POST', '/v1/admin/failed-events/evt_never_seen/retry', {
      token: adminToken,
    });
    expect([unknown.status, unknown.body.error.code]).toEqual([404, Codes.failed_event_not_found]);

    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: BOB, text: 'processed, not failed' });
    await postEvents(server.url, relayToken, e);
    await relay.waitForSend((s) => s.replyTo === e.id);
    const done = await api(server.url, 'POST', `/v1/admin/failed-events/${e.id}/retry`, { token: adminToken });
    expect([done.status, done.body.error.code]).toEqual([404, Codes.failed_event_not_found]);
    await relay.close();

    const long = await api(server.url, 'POST', `/v1/admin/failed-events/${'x'.repeat(201)}/retry`, {
      token: adminToken,
    });
    expect([long.status, long.body.error.code]).toEqual([400, Codes.validation_failed]);
    const surrogate = await api(server.url, 'POST', '/v1/admin/failed-events/%ED%A0%80/retry', { token: adminToken });
    expect([surrogate.status, surrogate.body.error.code]).toEqual([400, Codes.validation_failed]);
    for (const q of ['limit=0', 'limit=abc', 'after=-1']) {
      const bad = await api(server.url, 'GET', `/v1/admin/failed-events?${q}`, { token: adminToken });
      expect([bad.status, bad.body.error.code], q).toEqual([400, Codes.validation_failed]);
    }
  });
});
