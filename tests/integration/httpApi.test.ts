import { beforeAll, describe, expect, it } from 'vitest';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15554440001';
const BOB = '+15554440002';
let server: RunningServer;
let alice: string;
let sessionsBefore: number;
let db: Awaited<ReturnType<typeof createTestDatabase>>;

const sessionCount = async () => Number((await db.pool.query('SELECT count(*) FROM miniapp_sessions')).rows[0].count);

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url, { MAX_BODY_BYTES: '2048' });
  alice = await token(ALICE);
});

describe('HTTP API', () => {
  it('answers /health, /ready with pool and actor figures, and /metrics in Prometheus text', async () => {
    expect((await api(server.url, 'GET', '/health')).body).toEqual({ status: 'ok' });
    const ready = await api(server.url, 'GET', '/ready');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({
      status: 'ready',
      mode: 'single',
      node: expect.any(String),
      db: { total: expect.any(Number), idle: expect.any(Number), waiting: expect.any(Number) },
      actors: { conversations: expect.any(Number), miniapps: expect.any(Number) },
    });
    const metrics = await api(server.url, 'GET', '/metrics');
    for (const name of [
      'archety_db_pool_total',
      'archety_db_pool_idle',
      'archety_db_pool_waiting',
      'archety_actors_live',
      'archety_sockets_open',
      'archety_auth_failures_total',
      'archety_op_latency_seconds',
    ]) {
      expect(metrics.body).toContain(name);
    }
  });

  it('echoes x-request-id when given and generates one otherwise', async () => {
    const given = await api(server.url, 'GET', '/health', { headers: { 'x-request-id': 'trace-123' } });
    expect(given.headers.get('x-request-id')).toBe('trace-123');
    const generated = await api(server.url, 'GET', '/health');
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers unknown routes with 404 not_found and wrong methods with 405', async () => {
    const missing = await api(server.url, 'GET', '/nope');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe(Codes.not_found);
    const wrong = await api(server.url, 'DELETE', '/v1/miniapps');
    expect(wrong.status).toBe(405);
    expect(wrong.body.error.code).toBe(Codes.method_not_allowed);
  });

  describe('bad bodies change nothing', () => {
    beforeAll(async () => {
      sessionsBefore = await sessionCount();
    });

    const bad: [string, Parameters<typeof api>[3], number, string, (string | number)[]?][] = [
      ['invalid JSON', { raw: '{"app":', headers: { 'content-type': 'application/json' } }, 400, Codes.invalid_json],
      ['a JSON array', { body: [1, 2] }, 400, Codes.invalid_json],
      [
        'invalid UTF-8',
        { raw: Buffer.from([0x7b, 0xff, 0x7d]), headers: { 'content-type': 'application/json' } },
        400,
        Codes.invalid_json,
      ],
      [
        'a body that is not JSON',
        { raw: 'app=trip', headers: { 'content-type': 'text/plain' } },
        415,
        Codes.unsupported_media_type,
      ],
      [
        'a body over MAX_BODY_BYTES',
        { body: { app: 'trip-planner', title: 'x'.repeat(4096) } },
        413,
        Codes.payload_too_large,
      ],
      ['a missing app', { body: { title: 'x' } }, 400, Codes.validation_failed, ['app']],
      ['an unknown app', { body: { app: 'chess' } }, 400, Codes.unknown_app, ['app']],
      ['an empty title', { body: { app: 'trip-planner', title: '' } }, 400, Codes.validation_failed, ['title']],
      [
        'a participant that is not a string',
        { body: { app: 'trip-planner', participants: [42] } },
        400,
        Codes.validation_failed,
        ['participants', 0],
      ],
    ];
    for (const [what, options, status, code, path] of bad) {
      it(`answers ${status} ${code} for ${what}`, async () => {
        const res = await api(server.url, 'POST', '/v1/miniapps', { token: alice, ...options });
        expect(res.status).toBe(status);
        expect(res.body.error).toMatchObject({ code, message: expect.any(String) });
        if (path) expect(res.body.error.path).toEqual(path);
        expect(await sessionCount()).toBe(sessionsBefore);
      });
    }
  });

  it('adds a participant, who may then read the session; bad bodies are refused', async () => {
    const id = await createTrip(server.url, alice);
    const bob = await token(BOB);
    expect((await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: bob })).status).toBe(403);
    const bad = await api(server.url, 'POST', `/v1/miniapps/${id}/participants`, { token: alice, body: { user: '' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.path).toEqual(['user']);
    const added = await api(server.url, 'POST', `/v1/miniapps/${id}/participants`, {
      token: alice,
      body: { user: BOB },
    });
    expect(added.status).toBe(200);
    expect(added.body.participants).toEqual([ALICE, BOB]);
    expect((await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: bob })).status).toBe(200);
    const byStranger = await api(server.url, 'POST', `/v1/miniapps/${id}/participants`, {
      token: await token('+15554449999'),
      body: { user: '+15554449999' },
    });
    expect(byStranger.status).toBe(403);
  });

  it('serves the trip-planner page and its script without a token', async () => {
    const id = await createTrip(server.url, alice);
    const page = await api(server.url, 'GET', `/miniapp/${id}`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(page.body).toContain('/miniapp-assets/client.js');
    const script = await api(server.url, 'GET', '/miniapp-assets/client.js');
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toContain('javascript');
  });
});
