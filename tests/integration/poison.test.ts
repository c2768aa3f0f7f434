/**
 * A bad item fails alone (docs/protocol.md "Tenancy and hostile input", issue 7 finding 1): a
 * string PostgreSQL cannot store (U+0000, a lone surrogate) is refused where it arrives —
 * `invalid_op`, 400 with its path, or `rejected` in a batch — and never reaches the group
 * commit that other clients' writes share.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { openAIEnv, startFakeOpenAI } from '../helpers/fakeOpenAI.ts';
import { api, createTrip } from '../helpers/http.ts';
import { connectRelay, postEvents, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15552220001';
const BOB = '+15552220002';
const RELAY = 'relay-poison';
/** The strings of the finding: U+0000 and a lone high surrogate (JSON carries both as escapes). */
const POISON = ['bad\u0000', 'bad\ud800'] as const;

let db: TestDatabase;
let server: RunningServer;
let alice: string;
let bob: string;
let relay: string;

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url);
  [alice, bob, relay] = await Promise.all([token(ALICE), token(BOB), token(RELAY, { role: 'relay' })]);
});

async function count(sql: string, values: unknown[]): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>(sql, values);
  return Number(rows[0].n);
}

describe('a miniapp op with malformed text', () => {
  it('is answered invalid_op while every op of another trip in the same ticks is applied and its socket stays open', async () => {
    const [tripA, tripB] = await Promise.all([createTrip(server.url, alice), createTrip(server.url, bob)]);
    const a = await openSocket(server.url, tripA, alice);
    const b = await openSocket(server.url, tripB, bob);
    await Promise.all([a.next('snapshot'), b.next('snapshot')]);

    const poisonIds: string[] = [];
    const goodIds: string[] = [];
    for (let i = 0; i < 20; i++) {
      // Interleaved, so the poisoned ops' writes would share group commits with Bob's.
      if (i % 2 === 0) {
        const opId = `a${i}`;
        poisonIds.push(opId);
        a.send({
          type: 'op',
          opId,
          baseVersion: 0,
          op: { kind: 'set', path: ['title'], value: POISON[(i / 2) % 2] },
        });
      }
      const opId = `b${i}`;
      goodIds.push(opId);
      b.send({ type: 'op', opId, baseVersion: 0, op: { kind: 'set', path: ['title'], value: `Porto ${i}` } });
    }
    const [poisonAnswers, goodAnswers] = await Promise.all([
      Promise.all(poisonIds.map((id) => a.answer(id))),
      Promise.all(goodIds.map((id) => b.answer(id))),
    ]);
    for (const answer of poisonAnswers) expect(answer).toMatchObject({ type: 'error', code: Codes.invalid_op });
    for (const answer of goodAnswers) expect(answer.type).toBe('applied');
    expect(goodAnswers.map((f) => (f.type === 'applied' ? f.version : -1))).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 1),
    );

    // Both sockets still work: a valid op of each is applied after the poison.
    a.send({ type: 'op', opId: 'a-after', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Lisbon 2' } });
    b.send({ type: 'op', opId: 'b-after', baseVersion: 20, op: { kind: 'set', path: ['title'], value: 'Porto!' } });
    expect(await a.answer('a-after')).toMatchObject({ type: 'applied', version: 1 });
    expect(await b.answer('b-after')).toMatchObject({ type: 'applied', version: 21 });
    expect(a.ws.readyState).toBe(a.ws.OPEN);
    expect(b.ws.readyState).toBe(b.ws.OPEN);
    expect(await count('SELECT count(*) AS n FROM miniapp_ops WHERE session_id = $1', [tripA])).toBe(1);
    a.close();
    b.close();
  });

  it('is refused in item ids, object keys and path segments too, and nothing of it is stored', async () => {
    const trip = await createTrip(server.url, alice);
    const a = await openSocket(server.url, trip, alice);
    await a.next('snapshot');
    const ops = POISON.flatMap((bad) => [
      { kind: 'insert', path: ['days'], value: { id: bad, items: [] } },
      { kind: 'insert', path: ['members'], value: bad },
      { kind: 'insert', path: ['days'], value: { id: 'd1', items: [], [bad]: 1 } },
      { kind: 'set', path: ['days', { id: bad }, 'date'], value: null },
      { kind: 'remove', path: ['dates', bad] },
    ]);
    for (const [i, op] of ops.entries()) a.send({ type: 'op', opId: `p${i}`, baseVersion: 0, op });
    for (const [i] of ops.entries()) {
      expect(await a.answer(`p${i}`)).toMatchObject({ type: 'error', code: Codes.invalid_op, ref: `p${i}` });
    }
    const view = await api(server.url, 'GET', `/v1/miniapps/${trip}`, { token: alice });
    expect(view.body).toMatchObject({ version: 0, state: { days: [], members: [] } });
    a.close();
  });

  it('as its opId is refused as a bad frame and the socket stays open', async () => {
    const trip = await createTrip(server.url, alice);
    const a = await openSocket(server.url, trip, alice);
    await a.next('snapshot');
    for (const bad of POISON) {
      a.send({ type: 'op', opId: bad, baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'x' } });
      expect(await a.answer(bad)).toMatchObject({ type: 'error', code: Codes.validation_failed });
    }
    a.send({ type: 'op', opId: 'fine', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Faro' } });
    expect(await a.answer('fine')).toMatchObject({ type: 'applied', version: 1 });
    a.close();
  });
});

describe('an HTTP body with malformed text', () => {
  it('creating a trip is answered 400 with the path of the title or participant, and no trip is stored', async () => {
    const user = '+15552220077';
    const userToken = await token(user);
    for (const bad of POISON) {
      for (const [extra, path] of [
        [{ title: bad }, ['title']],
        [{ participants: [BOB, bad] }, ['participants', 1]],
        [{ chat: bad }, ['chat']],
      ] as const) {
        const res = await api(server.url, 'POST', '/v1/miniapps', {
          token: userToken,
          body: { app: 'trip-planner', ...extra },
        });
        expect(res.status).toBe(400);
        expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path });
      }
    }
    expect(await count('SELECT count(*) AS n FROM miniapp_sessions WHERE owner = $1', [user])).toBe(0);
  });

  it('adding a participant is answered 400 with the path of the user, and no participant is stored', async () => {
    const trip = await createTrip(server.url, alice);
    for (const bad of POISON) {
      const res = await api(server.url, 'POST', `/v1/miniapps/${trip}/participants`, {
        token: alice,
        body: { user: bad },
      });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path: ['user'] });
    }
    const view = await api(server.url, 'GET', `/v1/miniapps/${trip}`, { token: alice });
    expect(view.body.participants).toEqual([ALICE]);
  });
});

describe('a relay event with malformed text', () => {
  /** Events with one poisoned field each, and the path each is refused at. */
  function poisonedEvents(tag: string): { event: Record<string, unknown>; path: (string | number)[] }[] {
    return POISON.flatMap((bad, n) => {
      const base = (k: string) => relayEvent({ id: `evt_poison_${tag}_${n}_${k}`, sender: ALICE, text: 'hello' });
      const group = (k: string) =>
        relayEvent({ id: `evt_poison_${tag}_${n}_${k}`, group: 'iMessage;+;poison', sender: ALICE, text: 'Sage?' });
      return [
        { event: { ...base('text'), text: bad }, path: ['text'] },
        { event: { ...group('guid'), chat: { guid: bad, group: true } }, path: ['chat', 'guid'] },
        {
          event: { ...group('participants'), chat: { guid: 'iMessage;+;poison', group: true, participants: [bad] } },
          path: ['chat', 'participants', 0],
        },
        { event: { ...base('sender'), sender: bad }, path: ['sender'] },
        { event: { ...base('persona'), persona: bad }, path: ['persona'] },
        {
          event: { ...base('attachment'), attachments: [{ id: bad, mime: 'image/jpeg', data: 'AAAA' }] },
          path: ['attachments', 0, 'id'],
        },
        { event: { ...base('id'), id: `evt_poison_${tag}_${n}_${bad}` }, path: ['id'] },
      ];
    });
  }

  async function inboxRows(tag: string): Promise<number> {
    return count("SELECT count(*) AS n FROM relay_inbox WHERE event_id LIKE 'evt\\_poison\\_' || $1 || '%'", [tag]);
  }

  it('posted alone is answered 400 with its path, and nothing is stored', async () => {
    for (const { event, path } of poisonedEvents('single')) {
      const res = await postEvents(server.url, relay, event);
      expect(res.status, JSON.stringify(path)).toBe(400);
      expect(res.body.error).toMatchObject({ code: Codes.validation_failed, path });
    }
    expect(await inboxRows('single')).toBe(0);
  });

  it('in a batch is listed in rejected with its index while the valid events are accepted', async () => {
    const poisoned = poisonedEvents('batch');
    const valid = [0, 1].map((i) => relayEvent({ id: `evt_poison_batch_ok_${i}`, sender: BOB, text: 'hi' }));
    const events = [valid[0], ...poisoned.map((p) => p.event), valid[1]];
    const res = await postEvents(server.url, relay, { events });
    expect(res.status).toBe(202);
    expect(res.body.accepted).toEqual(valid.map((e) => e.id));
    expect(res.body.rejected.map((r: { index: number }) => r.index)).toEqual(poisoned.map((_, i) => i + 1));
    for (const [i, r] of res.body.rejected.entries()) {
      expect(r.error).toMatchObject({ code: Codes.validation_failed, path: poisoned[i].path });
    }
    expect(await inboxRows('batch')).toBe(2);
  });

  it('sent on the relay socket is answered with an error frame, and the socket goes on accepting events', async () => {
    const client = await connectRelay(server.url, relay);
    for (const { event } of poisonedEvents('socket')) {
      expect(await client.event(event)).toMatchObject({ type: 'error', code: Codes.validation_failed });
    }
    const ok = relayEvent({ id: 'evt_poison_socket_ok', sender: BOB, text: 'still here' });
    expect(await client.event(ok)).toEqual({ type: 'accepted', id: ok.id });
    expect(await inboxRows('socket')).toBe(1);
    await client.close();
  });
});

describe('a model reply with malformed text', () => {
  it('is stored and sent with U+0000 dropped and lone surrogates replaced', async () => {
    const fake = await startFakeOpenAI({ reply: () => 'Hi\u0000 there \ud800!' });
    const withModel = await startTestServer(db.url, openAIEnv(fake));
    const client = await connectRelay(withModel.url, relay, { autoAck: true });
    const event = relayEvent({ id: 'evt_poison_model', sender: '+15552220099', text: 'hello' });
    expect((await postEvents(withModel.url, relay, event)).status).toBe(202);
    const send = await client.waitForSend((s) => s.replyTo === event.id);
    expect(send.text).toBe('Hi there \ufffd!');
    const { rows } = await db.pool.query<{ text: string }>(
      "SELECT text FROM messages WHERE direction = 'out' AND conversation_key = $1",
      ['user_+15552220099_persona_sage'],
    );
    expect(rows.map((r) => r.text)).toEqual(['Hi there \ufffd!']);
    await client.close();
  });
});
