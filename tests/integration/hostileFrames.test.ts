/**
 * Hostile frames and bodies (docs/protocol.md "Tenancy and hostile input"): errors never echo a
 * client value beyond a short excerpt, and a frame whose handling fails counts as a bad frame.
 * The probe is a `type` nested 30,000 arrays deep (it fits in one 64 KiB frame): building an
 * error message with `JSON.stringify` of it throws.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { CloseCodes, Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { connectRelay, relayEvent } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15553330001';
const BOB = '+15553330002';
const DEPTH = 30_000;
/** A JSON value nested DEPTH arrays deep, as text (JSON.stringify of it throws). */
const DEEP = `${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}`;
/** An error message may quote a client value, but only a short excerpt of it. */
const SHORT = 300;

let server: RunningServer;
let alice: string;
let relayToken: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url);
  alice = await token(ALICE);
  relayToken = await token('relay-hostile', { role: 'relay' });
});

async function openTrip() {
  const s = await openSocket(server.url, await createTrip(server.url, alice), alice);
  await s.next('snapshot');
  return s;
}

describe('a frame whose type is nested 30,000 arrays deep', () => {
  it('is answered unknown_frame_type with a short message on a miniapp socket, which stays usable', async () => {
    const s = await openTrip();
    s.send(`{"type":${DEEP}}`);
    const error = await s.next('error');
    expect(error.code).toBe(Codes.unknown_frame_type);
    expect(error.message.length).toBeLessThan(SHORT);
    s.send({ type: 'op', opId: 'after', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Still here' } });
    expect(await s.answer('after')).toMatchObject({ type: 'applied', version: 1 });
    s.close();
  });

  it('counts as a bad frame: more than 100 of them close the miniapp socket with 1008', async () => {
    const s = await openTrip();
    for (let i = 0; i < 101; i++) s.send(`{"type":${DEEP}}`);
    expect((await s.closed).code).toBe(CloseCodes.policyViolation);
    expect(s.frames.filter((f) => f.type === 'error' && f.code === Codes.unknown_frame_type)).toHaveLength(100);
  });

  it('is answered unknown_frame_type on the relay socket, which goes on storing events', async () => {
    const relay = await connectRelay(server.url, relayToken);
    relay.ws.send(`{"type":${DEEP}}`);
    await expect.poll(() => relay.frames.find((f) => f.type === 'error')).toBeDefined();
    const error = relay.frames.find((f) => f.type === 'error') as { code: string; message: string };
    expect(error.code).toBe(Codes.unknown_frame_type);
    expect(error.message.length).toBeLessThan(SHORT);
    const e = relayEvent({ sender: BOB, text: 'hello' });
    expect(await relay.event(e)).toEqual({ type: 'accepted', id: e.id });
    await relay.close();
  });

  it('as an event type on the relay socket, is answered unknown_event_type with the event id as ref', async () => {
    const relay = await connectRelay(server.url, relayToken);
    relay.ws.send(`{"type":"event","event":{"id":"evt_deep_ws","type":${DEEP}}}`);
    await expect.poll(() => relay.frames.find((f) => f.type === 'error' && f.ref === 'evt_deep_ws')).toBeDefined();
    const error = relay.frames.find((f) => f.ref === 'evt_deep_ws') as { code: string; message: string };
    expect(error.code).toBe(Codes.unknown_event_type);
    expect(error.message.length).toBeLessThan(SHORT);
    await relay.close();
  });
});

describe('a relay batch holding a hostile event', () => {
  it('stores the valid events and lists the deep one in rejected, with a short message (never a 500)', async () => {
    const ok = relayEvent({ sender: BOB, text: 'a valid neighbour' });
    const raw = `{"events":[${JSON.stringify(ok)},{"id":"evt_deep_http","type":${DEEP}}]}`;
    const res = await api(server.url, 'POST', '/v1/relay/events', {
      token: relayToken,
      raw,
      headers: { 'content-type': 'application/json' },
    });
    expect(res.status).toBe(202);
    expect(res.body.accepted).toEqual([ok.id]);
    expect(res.body.rejected).toEqual([
      { index: 1, id: 'evt_deep_http', error: expect.objectContaining({ code: Codes.unknown_event_type }) },
    ]);
    expect(res.body.rejected[0].error.message.length).toBeLessThan(SHORT);
  });

  it('answers an unknown field with a long name with a truncated message and path', async () => {
    const longKey = 'k'.repeat(5000);
    const ok = relayEvent({ sender: BOB, text: 'another valid neighbour' });
    const bad = { ...relayEvent({ sender: BOB, text: 'x' }), [longKey]: 1 };
    const res = await api(server.url, 'POST', '/v1/relay/events', { token: relayToken, body: { events: [ok, bad] } });
    expect(res.status).toBe(202);
    const { error } = res.body.rejected[0];
    expect(error.code).toBe(Codes.validation_failed);
    expect(error.message.length).toBeLessThan(SHORT);
    expect(JSON.stringify(error.path).length).toBeLessThan(SHORT);
  });
});

describe('errors about client values', () => {
  it('quote an unknown op field with a long name only as a short excerpt', async () => {
    const s = await openTrip();
    const op = { kind: 'set', path: ['title'], value: 'x', ['k'.repeat(5000)]: 1 };
    s.send({ type: 'op', opId: 'long-key', baseVersion: 0, op });
    const answer = await s.answer('long-key');
    expect(answer).toMatchObject({ type: 'error', code: Codes.validation_failed });
    expect((answer as { message: string }).message.length).toBeLessThan(SHORT);
    s.close();
  });

  it('refuse an op whose value is nested 30,000 arrays deep as invalid_op, and the socket stays usable', async () => {
    const s = await openTrip();
    s.send(`{"type":"op","opId":"deep-value","baseVersion":0,"op":{"kind":"set","path":["members"],"value":${DEEP}}}`);
    const answer = await s.answer('deep-value');
    expect(answer).toMatchObject({ type: 'error', code: Codes.invalid_op });
    expect((answer as { message: string }).message.length).toBeLessThan(SHORT);
    s.send({ type: 'op', opId: 'fine', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Fine' } });
    expect(await s.answer('fine')).toMatchObject({ type: 'applied' });
    s.close();
  });
});
