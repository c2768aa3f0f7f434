import { describe, expect, it } from 'vitest';
import { CloseCodes } from '../../src/errors.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startLoggedServer, startTestServer } from '../helpers/server.ts';
import { openSocket, refusedStatus } from '../helpers/socket.ts';
import { customToken, token } from '../helpers/tokens.ts';

const ALICE = '+15556660001';

describe('actor lifecycle', () => {
  it('passivates an idle session with no sockets (saving a checkpoint) and rehydrates it on the next open', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url, { ACTOR_IDLE_MS: '200' });
    const alice = await token(ALICE);
    const id = await createTrip(server.url, alice);
    const a = await openSocket(server.url, id, alice);
    await a.next('snapshot');
    a.send({ type: 'op', opId: 'p1', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Kept' } });
    await a.next('applied');
    expect((await api(server.url, 'GET', '/ready')).body.actors.miniapps).toBe(1);
    a.close();
    await expect
      .poll(async () => (await api(server.url, 'GET', '/ready')).body.actors.miniapps, { timeout: 5000 })
      .toBe(0);
    const stored = await db.pool.query('SELECT version, state FROM miniapp_sessions WHERE id = $1', [id]);
    expect(stored.rows[0]).toMatchObject({ version: '1', state: { title: 'Kept' } });
    const b = await openSocket(server.url, id, alice);
    expect(await b.next('snapshot')).toMatchObject({ version: 1, state: { title: 'Kept' } });
    b.close();
  });

  it('stops a session whose epoch another owner took, acknowledges nothing it held, and recovers on reconnect', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url);
    const alice = await token(ALICE);
    const id = await createTrip(server.url, alice);
    const a = await openSocket(server.url, id, alice);
    await a.next('snapshot');
    a.send({ type: 'op', opId: 'before', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Before' } });
    await a.next('applied');
    // Another node activates the session: the epoch moves on.
    await db.pool.query("UPDATE actor_leases SET epoch = epoch + 1, owner = 'elsewhere' WHERE key = $1", [
      `miniapp:${id}`,
    ]);
    a.send({ type: 'op', opId: 'fenced', baseVersion: 1, op: { kind: 'set', path: ['title'], value: 'Lost?' } });
    const closed = await a.closed;
    expect(closed.code).toBe(CloseCodes.internalError);
    expect(a.frames.some((f) => f.type === 'applied' && f.opId === 'fenced')).toBe(false);
    const ops = await db.pool.query('SELECT op_id FROM miniapp_ops WHERE session_id = $1', [id]);
    expect(ops.rows.map((r) => r.op_id)).toEqual(['before']);
    const b = await openSocket(server.url, id, alice);
    expect(await b.next('snapshot')).toMatchObject({ version: 1, state: { title: 'Before' } });
    b.send({ type: 'op', opId: 'again', baseVersion: 1, op: { kind: 'set', path: ['title'], value: 'After' } });
    expect(await b.next('applied')).toMatchObject({ opId: 'again', version: 2 });
    b.close();
  });
});

describe('logs', () => {
  it('carry a request id on request lines and never contain a token', async () => {
    const db = await createTestDatabase();
    const { server, lines } = await startLoggedServer(db.url);
    const alice = await token(ALICE);
    const expired = await customToken({ sub: ALICE }, { exp: Math.floor(Date.now() / 1000) - 60 });
    const id = await createTrip(server.url, alice);
    await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: alice, headers: { 'x-request-id': 'req-abc' } });
    await refusedStatus(server.url, id, expired, 'query');
    await refusedStatus(server.url, id, expired, 'protocol');
    const s = await openSocket(server.url, id, alice, 'query');
    await s.next('snapshot');
    s.close();
    await expect.poll(() => lines.some((l) => l.includes('req-abc'))).toBe(true);
    const all = lines.join('\n');
    for (const t of [alice, expired]) {
      expect(all).not.toContain(t);
      expect(all).not.toContain(t.split('.')[2]);
    }
    const requestLines = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
    expect(requestLines.length).toBeGreaterThan(0);
    for (const l of requestLines) expect(l.reqId).toEqual(expect.any(String));
  });
});
