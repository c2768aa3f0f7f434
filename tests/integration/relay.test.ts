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
