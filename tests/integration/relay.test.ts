import { beforeAll, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { api } from '../helpers/http.ts';
import { connectRelay, postEvents, relayEvent, settleChat, submitFiveTimes } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15557000001';
const BOB = '+15557000002';
let server: RunningServer;
let db: TestDatabase;
let relayToken: string;

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url, { RELAY_MEDIA_HOSTS: 'media.example.com' });
  relayToken = await token('relay-1', { role: 'relay' });
});

describe('the relay', () => {
  it('accepts an event over HTTP after storing it, and Sage answers through the relay socket (offline brain)', async () => {
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: ALICE, text: 'Hi Sage! I love hiking in the Alps.' });
    const res = await postEvents(server.url, relayToken, e);
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ accepted: [e.id], duplicates: [], rejected: [] });
    const send = await relay.waitForSend((s) => s.replyTo === e.id);
    expect(send).toMatchObject({
      type: 'send',
      id: `out_${e.id}`,
      chat: { guid: `iMessage;-;${ALICE}`, group: false },
      to: ALICE,
    });
    expect(send.text).toContain('offline');
    await relay.close();
  });

  it('answers a repeated event id as a duplicate, over HTTP and over the socket, and processes it once', async () => {
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: BOB, text: 'hello there' });
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
    const rows = await db.pool.query('SELECT count(*) FROM messages WHERE id = $1', [`in_${e.id}`]);
    expect(rows.rows[0].count).toBe('1');
    await relay.close();
  });

  it('keeps the good events of a batch and reports the bad ones by index', async () => {
    const good = relayEvent({ sender: ALICE, text: 'ok' });
    const res = await postEvents(server.url, relayToken, {
      events: [good, { ...relayEvent({ sender: 'not-a-phone', text: 'x' }) }, { type: 'reaction', id: 'r1' }],
    });
    expect(res.status).toBe(202);
    expect(res.body.accepted).toEqual([good.id]);
    expect(res.body.rejected).toEqual([
      {
        index: 1,
        id: expect.any(String),
        error: expect.objectContaining({ code: Codes.validation_failed, path: ['sender'] }),
      },
      { index: 2, id: 'r1', error: expect.objectContaining({ code: Codes.unknown_event_type }) },
    ]);
  });

  it('refuses bad bodies with the right code and stores nothing', async () => {
    const before = (await db.pool.query('SELECT count(*) FROM relay_inbox')).rows[0].count;
    const cases: [unknown, number, string][] = [
      [relayEvent({ sender: ALICE }), 400, Codes.validation_failed],
      [{ ...relayEvent({ sender: ALICE, text: 'x' }), type: 'typing' }, 400, Codes.unknown_event_type],
      [relayEvent({ sender: ALICE, text: 'x'.repeat(10_001) }), 400, Codes.validation_failed],
      [
        relayEvent({
          sender: ALICE,
          attachments: [{ id: 'a', mime: 'image/jpeg', url: 'https://evil.example.org/x.jpg' }],
        }),
        400,
        Codes.validation_failed,
      ],
      [
        relayEvent({ sender: ALICE, attachments: [{ id: 'a', mime: 'not a mime', data: 'AAAA' }] }),
        400,
        Codes.validation_failed,
      ],
      [
        { events: Array.from({ length: 101 }, () => relayEvent({ sender: ALICE, text: 'x' })) },
        400,
        Codes.batch_too_large,
      ],
      [{ events: [{ type: 'message' }] }, 400, Codes.no_valid_events],
    ];
    for (const [body, status, code] of cases) {
      const res = await postEvents(server.url, relayToken, body);
      expect(res.status, JSON.stringify(res.body)).toBe(status);
      expect(res.body.error.code).toBe(code);
    }
    const after = (await db.pool.query('SELECT count(*) FROM relay_inbox')).rows[0].count;
    expect(after).toBe(before);
  });

  it('refuses users on relay endpoints and lets a person read their own direct history only', async () => {
    const alice = await token(ALICE);
    expect((await postEvents(server.url, alice, relayEvent({ sender: ALICE, text: 'x' }))).status).toBe(403);
    const key = encodeURIComponent(`user_${ALICE}_persona_sage`);
    const own = await api(server.url, 'GET', `/v1/conversations/${key}/messages?limit=2`, { token: alice });
    expect(own.status).toBe(200);
    expect(own.body.messages).toHaveLength(2);
    expect(new Date(own.body.messages[0].createdAt) >= new Date(own.body.messages[1].createdAt)).toBe(true);
    const bobs = encodeURIComponent(`user_${BOB}_persona_sage`);
    expect((await api(server.url, 'GET', `/v1/conversations/${bobs}/messages`, { token: alice })).status).toBe(403);
    const admin = await token('ops', { role: 'admin' });
    expect((await api(server.url, 'GET', `/v1/conversations/${bobs}/messages`, { token: admin })).status).toBe(200);
    expect((await api(server.url, 'GET', '/v1/conversations/group_nope/messages', { token: admin })).status).toBe(404);
  });
});

describe('message history', () => {
  it('pages through a conversation newest first with `next` as the following `before`, every message once, in the documented shape', async () => {
    const key = 'user_+15557000009_persona_sage';
    await db.pool.query(
      `INSERT INTO conversations (key, kind, persona, chat_guid) VALUES ($1, 'direct', 'sage', 'iMessage;-;+15557000009')`,
      [key],
    );
    // 23 messages a second apart (milliseconds and a photo on some), and one with no text.
    await db.pool.query(
      `INSERT INTO messages (id, conversation_key, sender, direction, text, attachments, created_at)
       SELECT 'hist_' || g, $1, CASE WHEN g % 2 = 0 THEN '+15557000009' ELSE 'sage' END,
              CASE WHEN g % 2 = 0 THEN 'in' ELSE 'out' END, CASE WHEN g = 7 THEN NULL ELSE 'message "' || g || '" é' END,
              CASE WHEN g % 5 = 0 THEN jsonb_build_array(jsonb_build_object('id', 'p' || g, 'mime', 'image/jpeg', 'description', 'a photo')) ELSE '[]' END,
              timestamptz '2026-01-02 03:04:05.678+00' + g * interval '1.001 second'
         FROM generate_series(1, 23) g`,
      [key],
    );
    const admin = await token('ops', { role: 'admin' });
    const pages: { messages: Record<string, unknown>[]; next: string | null }[] = [];
    let before = '';
    for (;;) {
      const res = await api(
        server.url,
        'GET',
        `/v1/conversations/${encodeURIComponent(key)}/messages?limit=5${before}`,
        {
          token: admin,
        },
      );
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/json');
      pages.push(res.body);
      if (res.body.next === null) break;
      before = `&before=${encodeURIComponent(res.body.next)}`;
    }
    expect(pages.map((p) => p.messages.length)).toEqual([5, 5, 5, 5, 3]);
    const all = pages.flatMap((p) => p.messages);
    expect(all.map((m) => m.id)).toEqual(Array.from({ length: 23 }, (_, i) => `hist_${23 - i}`));
    // Each page's cursor is its last message's time, as JavaScript writes it.
    for (const p of pages.slice(0, -1)) expect(p.next).toBe(p.messages.at(-1)?.createdAt);
    const at = (g: number) => new Date(Date.parse('2026-01-02T03:04:05.678Z') + g * 1001).toISOString();
    expect(all.find((m) => m.id === 'hist_10')).toEqual({
      id: 'hist_10',
      sender: '+15557000009',
      direction: 'in',
      text: 'message "10" é',
      attachments: [{ id: 'p10', mime: 'image/jpeg', description: 'a photo' }],
      createdAt: at(10),
    });
    expect(all.find((m) => m.id === 'hist_7')).toEqual({
      id: 'hist_7',
      sender: 'sage',
      direction: 'out',
      text: '',
      attachments: [],
      createdAt: at(7),
    });
    // A page that ends exactly at the oldest message still has a cursor; the page after it is empty.
    const exact = await api(server.url, 'GET', `/v1/conversations/${encodeURIComponent(key)}/messages?limit=23`, {
      token: admin,
    });
    expect(exact.body.next).toBe(at(1));
    const after = await api(
      server.url,
      'GET',
      `/v1/conversations/${encodeURIComponent(key)}/messages?before=${encodeURIComponent(at(1))}`,
      { token: admin },
    );
    expect(after.body).toEqual({ messages: [], next: null });
  });

  it('answers an empty page for a conversation with no messages, 404 for none, and 400 for a bad cursor or limit', async () => {
    const key = 'user_+15557000010_persona_sage';
    await db.pool.query(
      `INSERT INTO conversations (key, kind, persona, chat_guid) VALUES ($1, 'direct', 'sage', 'iMessage;-;+15557000010')`,
      [key],
    );
    const admin = await token('ops', { role: 'admin' });
    const get = (query: string, k = key) =>
      api(server.url, 'GET', `/v1/conversations/${encodeURIComponent(k)}/messages${query}`, { token: admin });
    expect((await get('')).body).toEqual({ messages: [], next: null });
    const missing = await get('', 'user_+15557000011_persona_sage');
    expect([missing.status, missing.body.error.code]).toEqual([404, Codes.conversation_not_found]);
    for (const query of ['?before=yesterday', '?limit=0', '?limit=201', '?limit=abc']) {
      const bad = await get(query);
      expect([query, bad.status, bad.body.error.code]).toEqual([query, 400, Codes.validation_failed]);
    }
  });
});

describe('hostile input', () => {
  it('answers 413 to a body over MAX_BODY_BYTES and 400 to invalid UTF-8, storing nothing', async () => {
    const db2 = await createTestDatabase();
    const small = await startTestServer(db2.url, { MAX_BODY_BYTES: '4096', MAX_ATTACHMENT_BYTES: '1024' });
    const big = await postEvents(small.url, relayToken, relayEvent({ sender: ALICE, text: 'x'.repeat(5000) }));
    expect(big.status).toBe(413);
    const raw = await api(small.url, 'POST', '/v1/relay/events', {
      token: relayToken,
      raw: Buffer.concat([Buffer.from('{"id":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]),
      headers: { 'content-type': 'application/json' },
    });
    expect(raw.status).toBe(400);
    expect(raw.body.error.code).toBe(Codes.invalid_json);
    const attachment = await postEvents(
      small.url,
      relayToken,
      relayEvent({
        sender: ALICE,
        attachments: [{ id: 'a', mime: 'image/png', data: Buffer.alloc(2000).toString('base64') }],
      }),
    );
    expect(attachment.status).toBe(400);
    expect(attachment.body.error.path).toEqual(['attachments', 0, 'data']);
    expect((await db2.pool.query('SELECT count(*) FROM relay_inbox')).rows[0].count).toBe('0');
  });

  it('answers bad relay socket frames with errors and keeps the socket open', async () => {
    const relay = await connectRelay(server.url, relayToken);
    const errors = () => relay.frames.filter((f) => f.type === 'error');
    relay.ws.send('not json');
    relay.ws.send(JSON.stringify({ type: 'wave' }));
    relay.ws.send(JSON.stringify({ type: 'ack' }));
    relay.ws.send(JSON.stringify({ type: 'event' }));
    await expect.poll(() => errors().length).toBe(4);
    expect(errors().map((f) => f.code)).toEqual([
      Codes.invalid_json,
      Codes.unknown_frame_type,
      Codes.validation_failed,
      Codes.validation_failed,
    ]);
    const bad = await relay.event({ ...relayEvent({ sender: 'nobody', text: 'x' }), id: 'bad-1' });
    expect(bad).toMatchObject({ type: 'error', code: Codes.validation_failed, ref: 'bad-1' });
    const good = relayEvent({ sender: BOB, text: 'still open' });
    expect(await relay.event(good)).toEqual({ type: 'accepted', id: good.id });
    // An ack of an id the server never sent is ignored: no error, and the socket keeps working.
    // Frames are handled in order, so an error for the ack would come before the next answer.
    relay.ack('out_unknown');
    const after = relayEvent({ sender: BOB, text: 'after an unknown ack' });
    expect(await relay.event(after)).toEqual({ type: 'accepted', id: after.id });
    expect(errors()).toHaveLength(5);
    expect(relay.ws.readyState).toBe(relay.ws.OPEN);
    await relay.close();
  });

  it('answers relay-level floods with 429 and Retry-After, storing nothing of the refused batch', async () => {
    const db3 = await createTestDatabase();
    const limited = await startTestServer(db3.url, { RELAY_EVENTS_PER_SECOND: '1', RELAY_EVENTS_BURST: '3' });
    const flood = { events: Array.from({ length: 4 }, () => relayEvent({ sender: ALICE, text: 'flood' })) };
    const res = await postEvents(limited.url, relayToken, flood);
    expect(res.status).toBe(429);
    expect(res.body.error.code).toBe(Codes.rate_limited);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await db3.pool.query('SELECT count(*) FROM relay_inbox')).rows[0].count).toBe('0');
  });

  it('refuses relay upgrades without a relay token', async () => {
    await expect(connectRelay(server.url, await token(ALICE))).rejects.toMatchObject({ status: 403 });
    await expect(connectRelay(server.url, 'garbage')).rejects.toMatchObject({ status: 401 });
  });
});
