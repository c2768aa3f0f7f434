import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { miniapps } from '../../actors/apps/index.ts';
import { CHECKPOINT_EVERY } from '../../actors/miniappSession.ts';
import { applyOp } from '../../actors/ops.ts';
import { CloseCodes, Codes } from '../../src/errors.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { startEditLoad } from '../helpers/load.ts';
import { baseEnv, spawnServer, startTestServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const USERS = ['+15553330001', '+15553330002', '+15553330003', '+15553330004'];
/** The code a socket closed by its own client without a status reports: the server never closed it. */
const CLOSED_BY_CLIENT = 1005;
/** Closes the page's client answers by reconnecting: session stopped, or dropped as a slow consumer. */
const RECONNECT_ON: number[] = [CloseCodes.internalError, CloseCodes.abnormal];

/** Every acknowledged op is stored exactly once, versions are gap-free and replay to the stored state. */
async function expectDurable(pool: pg.Pool, sessionId: string, acked: Set<string>, base: string, viewer: string) {
  const { rows } = await pool.query<{ version: string; op_id: string; op: never }>(
    'SELECT version, op_id, op FROM miniapp_ops WHERE session_id = $1 ORDER BY version',
    [sessionId],
  );
  const stored = new Set(rows.map((r) => r.op_id));
  expect(stored.size).toBe(rows.length);
  for (const id of acked) expect(stored.has(id), `acknowledged op ${id} is stored`).toBe(true);
  expect(rows.map((r) => Number(r.version))).toEqual(rows.map((_, i) => i + 1));
  const schema = miniapps.get('trip-planner')?.schema as never;
  let state: unknown = miniapps.get('trip-planner')?.initialState({ title: 'Lisbon' });
  for (const r of rows) {
    const next = applyOp(schema, state, r.op);
    expect(next.ok).toBe(true);
    if (next.ok) state = next.state;
  }
  const view = await api(base, 'GET', `/v1/miniapps/${sessionId}`, { token: viewer });
  expect(view.status).toBe(200);
  expect(view.body.version).toBe(rows.length);
  expect(view.body.state).toEqual(state);
}

describe('resilience', () => {
  it('keeps every acknowledged op when the pool’s connections are terminated mid-load', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url);
    const tokens = await Promise.all(USERS.map((u) => token(u)));
    const id = await createTrip(server.url, tokens[0], { participants: USERS });
    const killer = new pg.Client({ connectionString: db.url });
    await killer.connect();
    let kills = 0;
    const killing = setInterval(() => {
      kills++;
      killer
        .query(
          'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
          [db.name],
        )
        .catch(() => {});
    }, 150);
    // The load runs until every client has had edits acknowledged while connections were being
    // killed (on a busy machine that takes longer than on an idle one).
    let enough!: () => void;
    const loading = startEditLoad(server.url, id, tokens, {
      durationMs: 45_000,
      intervalMs: 5,
      reconnectOn: RECONNECT_ON,
      until: new Promise<void>((resolve) => (enough = resolve)),
    });
    const ackedBy = (k: number) => [...loading.result.acked].filter((op) => op.startsWith(`item${k}-`)).length;
    await expect
      .poll(() => kills > 5 && USERS.every((_, k) => ackedBy(k) > 5), { timeout: 45_000, interval: 100 })
      .toBe(true);
    enough();
    const load = await loading.done;
    clearInterval(killing);
    await killer.end();
    // A socket whose session had to stop was closed with 1011, one whose client fell behind on
    // a busy machine was dropped (1006) — the page reconnects and resumes after both; nothing
    // else closed any.
    for (const code of load.closeCodes) expect([CLOSED_BY_CLIENT, ...RECONNECT_ON]).toContain(code);
    // The server recovered: it is ready and takes new edits.
    await expect.poll(async () => (await api(server.url, 'GET', '/ready')).status, { timeout: 15_000 }).toBe(200);
    const s = await openSocket(server.url, id, tokens[0]);
    const snap = await s.next('snapshot');
    s.send({
      type: 'op',
      opId: 'after-kills',
      baseVersion: snap.version,
      op: { kind: 'set', path: ['title'], value: 'Recovered' },
    });
    expect(await s.answer('after-kills')).toMatchObject({ type: 'applied', opId: 'after-kills' });
    s.close();
    load.acked.add('after-kills');
    await expectDurable(db.pool, id, load.acked, server.url, tokens[0]);
  }, 90_000);

  it('answers 503 db_unavailable quickly when the pool is exhausted, and recovers', async () => {
    const db = await createTestDatabase();
    const server = await startTestServer(db.url, {
      PG_POOL_MAX: '3',
      PG_CONNECTION_TIMEOUT_MS: '300',
      PG_STATEMENT_TIMEOUT_MS: '20000',
    });
    const alice = await token(USERS[0]);
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE miniapp_sessions IN ACCESS EXCLUSIVE MODE');
    // Three creates take every connection and wait on the lock; the next ones find no connection.
    let unblocked = false;
    const stuck = Promise.all(
      [1, 2, 3].map(() => api(server.url, 'POST', '/v1/miniapps', { token: alice, body: { app: 'trip-planner' } })),
    ).finally(() => {
      unblocked = true;
    });
    const waitingOnTheLock = () =>
      db.pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [
        db.name,
      ]);
    await expect.poll(async () => (await waitingOnTheLock()).rows[0].n).toBe(3);
    const refused = await api(server.url, 'POST', '/v1/miniapps', { token: alice, body: { app: 'trip-planner' } });
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe(Codes.db_unavailable);
    // Answered while the lock still holds every connection: it waited for a connection, not the lock.
    expect(unblocked).toBe(false);
    const ready = await api(server.url, 'GET', '/ready');
    expect(ready.body.db).toMatchObject({ total: 3, waiting: expect.any(Number) });
    await locker.query('ROLLBACK');
    await locker.end();
    expect((await stuck).map((r) => r.status)).toEqual([201, 201, 201]);
    expect(
      (await api(server.url, 'POST', '/v1/miniapps', { token: alice, body: { app: 'trip-planner' } })).status,
    ).toBe(201);
  });

  it('shuts down gracefully on SIGTERM under load: exit 0 within 10 s, sockets closed with 1001, no acknowledged op lost', async () => {
    const db = await createTestDatabase();
    const env = baseEnv(db.url);
    const first = await spawnServer(env);
    const tokens = await Promise.all(USERS.map((u) => token(u)));
    const id = await createTrip(first.url, tokens[0], { participants: USERS });
    const loading = startEditLoad(first.url, id, tokens, { durationMs: 8000, intervalMs: 2 });
    await expect.poll(() => loading.result.acked.size, { timeout: 10_000 }).toBeGreaterThan(20);
    const signalled = Date.now();
    first.child.kill('SIGTERM');
    const exit = await first.exited;
    expect(exit.code).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(10_000);
    const load = await loading.done;
    expect(new Set(load.closeCodes)).toEqual(new Set([CloseCodes.goingAway]));
    expect(load.acked.size).toBeGreaterThan(20);
    const second = await spawnServer(env);
    await expectDurable(db.pool, id, load.acked, second.url, tokens[0]);
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });

  it('resumes after a crash (SIGKILL): ops since the last checkpoint are replayed and versions continue', async () => {
    const db = await createTestDatabase();
    const env = baseEnv(db.url, { MAX_OPS_PER_SECOND: '1000' });
    const first = await spawnServer(env);
    const alice = await token(USERS[0]);
    const id = await createTrip(first.url, alice);
    const a = await openSocket(first.url, id, alice);
    await a.next('snapshot');
    for (let i = 0; i < 120; i++) {
      const value = { id: `b${i}`, label: `cost ${i}`, amount: i };
      a.send({ type: 'op', opId: `k${i}`, baseVersion: i, op: { kind: 'insert', path: ['budget', 'items'], value } });
    }
    await expect.poll(() => a.frames.filter((f) => f.type === 'applied').length, { timeout: 10_000 }).toBe(120);
    // The last checkpoint is behind the last op: what follows it lives only in miniapp_ops.
    const checkpoint = async () =>
      Number((await db.pool.query('SELECT version FROM miniapp_sessions WHERE id = $1', [id])).rows[0].version);
    await expect.poll(checkpoint).toBe(CHECKPOINT_EVERY);
    expect(CHECKPOINT_EVERY).toBeLessThan(120);
    first.child.kill('SIGKILL');
    await first.exited;
    await a.closed;

    const second = await spawnServer(env);
    const b = await openSocket(second.url, id, alice);
    const snap = await b.next('snapshot');
    expect(snap.version).toBe(120);
    expect((snap.state as { budget: { items: unknown[] } }).budget.items).toHaveLength(120);
    b.send({ type: 'resume', since: 117 });
    const resumed = [await b.answer('k117'), await b.answer('k118'), await b.answer('k119')];
    expect(resumed).toMatchObject([117, 118, 119].map((v) => ({ type: 'applied', version: v + 1 })));
    expect(b.frames.filter((f) => f.type === 'applied').map((f) => f.opId)).toEqual(['k117', 'k118', 'k119']);
    // A stale edit from before the crash is still checked against the stored ops.
    b.send({ type: 'op', opId: 'stale', baseVersion: 100, op: { kind: 'remove', path: ['budget', 'items', 0] } });
    const conflict = await b.answer('stale');
    expect(conflict.type).toBe('conflict');
    if (conflict.type === 'conflict')
      expect(conflict.ops.map((o) => o.version)).toEqual(Array.from({ length: 20 }, (_, i) => 101 + i));
    b.send({
      type: 'op',
      opId: 'next',
      baseVersion: 120,
      op: { kind: 'set', path: ['title'], value: 'After the crash' },
    });
    expect(await b.answer('next')).toMatchObject({ type: 'applied', opId: 'next', version: 121 });
    b.close();
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });
});
