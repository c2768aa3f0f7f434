import { beforeAll, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15551230001';
const BOB = '+15551230002';

let server: RunningServer;
let alice: string;
let bob: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url);
  alice = await token(ALICE);
  bob = await token(BOB);
});

describe('miniapp sessions', () => {
  it('creates a trip planner whose creator and listed participants may open it', async () => {
    const res = await api(server.url, 'POST', '/v1/miniapps', {
      token: alice,
      body: { app: 'trip-planner', title: 'Porto', participants: [BOB] },
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ app: 'trip-planner', version: 0, state: { title: 'Porto', days: [] } });
    const got = await api(server.url, 'GET', `/v1/miniapps/${res.body.id}`, { token: bob });
    expect(got.status).toBe(200);
    expect(got.body.participants.sort()).toEqual([ALICE, BOB].sort());
  });

  it('sends a snapshot on open and broadcasts applied ops to every socket, sender included', async () => {
    const id = await createTrip(server.url, alice, { participants: [BOB] });
    const a = await openSocket(server.url, id, alice);
    const b = await openSocket(server.url, id, bob);
    expect(a.protocol).toBe('archety.v1');
    const snap = await a.next('snapshot');
    expect(snap).toMatchObject({ version: 0, state: { title: 'Lisbon' } });
    await b.next('snapshot');
    a.send({ type: 'op', opId: 'o1', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Lisbon in May' } });
    const [ga, gb] = await Promise.all([a.next('applied'), b.next('applied')]);
    expect(ga).toEqual({
      type: 'applied',
      opId: 'o1',
      by: ALICE,
      version: 1,
      op: { kind: 'set', path: ['title'], value: 'Lisbon in May' },
    });
    expect(gb).toEqual(ga);
    const view = await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: alice });
    expect(view.body).toMatchObject({ version: 1, state: { title: 'Lisbon in May' } });
    a.close();
    b.close();
  });

  it('answers conflict to a stale edit of the same field and applies a stale edit of another field', async () => {
    const id = await createTrip(server.url, alice, { participants: [BOB] });
    const a = await openSocket(server.url, id, alice);
    const b = await openSocket(server.url, id, bob);
    await a.next('snapshot');
    await b.next('snapshot');
    a.send({ type: 'op', opId: 'a1', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'A' } });
    await b.next('applied');
    b.send({ type: 'op', opId: 'b1', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'B' } });
    const conflict = await b.next('conflict');
    expect(conflict).toEqual({
      type: 'conflict',
      opId: 'b1',
      version: 1,
      ops: [{ opId: 'a1', by: ALICE, version: 1, op: { kind: 'set', path: ['title'], value: 'A' } }],
    });
    b.send({ type: 'op', opId: 'b2', baseVersion: 0, op: { kind: 'set', path: ['budget', 'currency'], value: 'EUR' } });
    const applied = await b.next('applied');
    expect(applied).toMatchObject({ opId: 'b2', version: 2 });
    const view = await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: alice });
    expect(view.body.state).toMatchObject({ title: 'A', budget: { currency: 'EUR' } });
    a.close();
    b.close();
  });

  it('refuses an op that would break the schema with invalid_op and changes nothing', async () => {
    const id = await createTrip(server.url, alice);
    const a = await openSocket(server.url, id, alice);
    await a.next('snapshot');
    a.send({ type: 'op', opId: 'x', baseVersion: 0, op: { kind: 'set', path: ['title'], value: '' } });
    const err = await a.next('error');
    expect(err).toMatchObject({ code: Codes.invalid_op, ref: 'x' });
    const view = await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: alice });
    expect(view.body).toMatchObject({ version: 0, state: { title: 'Lisbon' } });
    a.close();
  });
});
