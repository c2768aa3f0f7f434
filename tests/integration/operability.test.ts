/**
 * What an operator sees: one log line per request at the default level (probes and refused
 * floods at debug), carrying the request's x-request-id and never its token; `/metrics` on a
 * port of its own with METRICS_PORT; the offline brain's replies counted apart from a model's.
 */
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { connectRelay, postEvents, relayEvent } from '../helpers/relay.ts';
import { startLoggedServer, startTestServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const INFO = 30;
const DEBUG = 20;

describe('request logs', () => {
  it('log every request once at info with its x-request-id, status and time, probes at debug, and never the token', async () => {
    const db = await createTestDatabase();
    const { server, lines } = await startLoggedServer(db.url);
    const alice = await token('+15557710001');
    const created = await api(server.url, 'POST', '/v1/miniapps', {
      token: alice,
      body: { app: 'trip-planner', title: 'Lisbon' },
      headers: { 'x-request-id': 'req-create-lisbon' },
    });
    expect(created.status).toBe(201);
    const missing = await api(server.url, 'GET', '/v1/nowhere', { headers: { 'x-request-id': 'req-nowhere' } });
    expect(missing.status).toBe(404);
    expect((await api(server.url, 'GET', '/health')).status).toBe(200);
    const requests = () => lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
    await expect.poll(() => requests().length).toBeGreaterThanOrEqual(3);
    const byId = (id: string) => requests().filter((l) => l.reqId === id);
    expect(byId('req-create-lisbon')).toEqual([
      expect.objectContaining({
        level: INFO,
        method: 'POST',
        url: '/v1/miniapps',
        status: 201,
        ms: expect.any(Number),
      }),
    ]);
    expect(byId('req-nowhere')).toEqual([expect.objectContaining({ level: INFO, url: '/v1/nowhere', status: 404 })]);
    expect(requests().filter((l) => l.url === '/health')).toEqual([expect.objectContaining({ level: DEBUG })]);
    expect(lines.join('\n')).not.toContain(alice);
  });

  it('log relay pushes stored at debug and pushes refused at info, each with its x-request-id', async () => {
    const db = await createTestDatabase();
    const { server, lines } = await startLoggedServer(db.url);
    const relayToken = await token('relay-request-lines', { role: 'relay' });
    const push = (body: unknown, reqId: string) =>
      api(server.url, 'POST', '/v1/relay/events', { token: relayToken, body, headers: { 'x-request-id': reqId } });
    expect((await push(relayEvent({ sender: '+15557710005', text: 'hi' }), 'req-push-stored')).status).toBe(202);
    expect((await push({ id: 'no-sender', type: 'message' }, 'req-push-invalid')).status).toBe(400);
    const requests = () => lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
    await expect.poll(() => requests().filter((l) => l.url === '/v1/relay/events').length).toBe(2);
    const byId = (id: string) => requests().filter((l) => l.reqId === id);
    expect(byId('req-push-stored')).toEqual([expect.objectContaining({ level: DEBUG, method: 'POST', status: 202 })]);
    expect(byId('req-push-invalid')).toEqual([expect.objectContaining({ level: INFO, method: 'POST', status: 400 })]);
    expect(lines.join('\n')).not.toContain(relayToken);
  });
});

describe('METRICS_PORT', () => {
  it('serves /metrics on its own port only', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url, { METRICS_PORT: '0' });
    expect(server.metricsUrl.startsWith(`${server.url}/`)).toBe(false);
    const onPublic = await api(server.url, 'GET', '/metrics');
    expect(onPublic.status).toBe(404);
    const res = await fetch(server.metricsUrl);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('archety_http_requests_total');
    expect((await fetch(server.metricsUrl.replace('/metrics', '/ready'))).status).toBe(404);
  });

  it('is refused when it is not a port number', async () => {
    const db = await createTestDatabase();
    await expect(startTestServer(db.url, { METRICS_PORT: 'ninety' })).rejects.toThrow(/METRICS_PORT/);
  });
});

describe('op outcomes', () => {
  it('counts ops answered otherwise than applied by outcome: a conflict, an invalid op', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url);
    const alice = await token('+15557710003');
    const bob = await token('+15557710004');
    const trip = await createTrip(server.url, alice, { participants: ['+15557710004'] });
    const a = await openSocket(server.url, trip, alice);
    const b = await openSocket(server.url, trip, bob);
    await a.next('snapshot');
    await b.next('snapshot');
    const set = (opId: string, value: string) => ({
      type: 'op',
      opId,
      baseVersion: 0,
      op: { kind: 'set', path: ['title'], value },
    });
    a.send(set('a1', 'Porto'));
    expect((await a.answer('a1')).type).toBe('applied');
    b.send(set('b1', 'Faro'));
    expect((await b.answer('b1')).type).toBe('conflict');
    b.send({ type: 'op', opId: 'b2', baseVersion: 1, op: { kind: 'set', path: ['nowhere'], value: 1 } });
    expect(await b.answer('b2')).toMatchObject({ type: 'error', code: 'invalid_op' });
    const metrics = (await api(server.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/archety_op_outcomes_total\{outcome="conflict"\} 1\n/);
    expect(metrics).toMatch(/archety_op_outcomes_total\{outcome="invalid_op"\} 1\n/);
    a.close();
    b.close();
  });
});

describe('the offline brain', () => {
  it('counts its replies as outcome="offline", never as a model reply', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url);
    const relayToken = await token('relay-operability', { role: 'relay' });
    const relay = await connectRelay(server.url, relayToken, { autoAck: true });
    const e = relayEvent({ sender: '+15557710002', text: 'hello there' });
    expect((await postEvents(server.url, relayToken, e)).status).toBe(202);
    await relay.waitForSend((s) => s.replyTo === e.id);
    const metrics = (await api(server.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/archety_conversation_messages_total\{outcome="offline"\} 1/);
    expect(metrics).not.toMatch(/archety_conversation_messages_total\{outcome="model"\}/);
    await relay.close();
  });
});
