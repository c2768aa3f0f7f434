/**
 * Caps on sockets and on what a socket may ask for (docs/protocol.md "Tenancy and hostile input",
 * README "Limits"): MAX_SOCKETS_PER_USER and MAX_SOCKETS_PER_SESSION refuse upgrades past them
 * with 429; `resume` spends the op budget and never reads more than the ops a resume may
 * replay; presence frames of a burst of joins are coalesced.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { MAX_RESUME_OPS } from '../../actors/miniappSession.ts';
import { Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { MiniappRepository } from '../../src/store/miniappRepository.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { connectRelay } from '../helpers/relay.ts';
import { startTestServer } from '../helpers/server.ts';
import { type Opened, openSocket, refusedStatus, wsUrl } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15556660001';
const BOB = '+15556660002';
const CAROL = '+15556660003';
const PER_USER = 20;
const PER_SESSION = 30;
const OPS_PER_SECOND = 20;

let db: TestDatabase;
let server: RunningServer;
let alice: string;
let bob: string;
let carol: string;

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url, {
    MAX_SOCKETS_PER_USER: String(PER_USER),
    MAX_SOCKETS_PER_SESSION: String(PER_SESSION),
    MAX_OPS_PER_SECOND: String(OPS_PER_SECOND),
  });
  [alice, bob, carol] = await Promise.all([token(ALICE), token(BOB), token(CAROL)]);
});

async function open(sessionId: string, as: string): Promise<Opened> {
  const s = await openSocket(server.url, sessionId, as);
  await s.next('snapshot');
  return s;
}

/** Closes `sockets` and waits for the server's close echo (so the server has counted them out). */
async function closeAll(sockets: Opened[]): Promise<void> {
  for (const s of sockets) s.close();
  await Promise.all(sockets.map((s) => s.closed));
}

const trip = () => createTrip(server.url, alice, { participants: [BOB, CAROL] });

describe('MAX_SOCKETS_PER_USER', () => {
  it("refuses a user's 21st socket with 429 while another user still opens, and opens one again after a close", async () => {
    const id = await trip();
    const mine: Opened[] = [];
    for (let i = 0; i < PER_USER; i++) mine.push(await open(id, alice));
    // Another session of the same user is refused too: the cap is per user.
    expect(await refusedStatus(server.url, await trip(), alice)).toBe(429);
    expect(await refusedStatus(server.url, id, alice)).toBe(429);
    const other = await open(id, bob);
    await closeAll([mine.pop() as Opened]);
    mine.push(await open(id, alice));
    await closeAll([...mine, other]);
  });

  it('answers the refusal with rate_limited and Retry-After', async () => {
    const id = await trip();
    const mine = await Promise.all(Array.from({ length: PER_USER }, () => open(id, alice)));
    const refusal = await new Promise<{ status?: number; retryAfter?: string; body: string }>((resolve, reject) => {
      const ws = new WebSocket(wsUrl(server.url, id), ['archety.v1', `bearer.${alice}`]);
      ws.on('open', () => reject(new Error('the upgrade was accepted')));
      ws.on('error', reject);
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () =>
          resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'] as string, body }),
        );
      });
    });
    expect(refusal.status).toBe(429);
    expect(refusal.retryAfter).toMatch(/^\d+$/);
    expect(JSON.parse(refusal.body).error.code).toBe(Codes.rate_limited);
    await closeAll(mine);
  });

  it('counts the sockets of a relay token the same way', async () => {
    const relayToken = await token('relay-caps', { role: 'relay' });
    const relays = await Promise.all(Array.from({ length: PER_USER }, () => connectRelay(server.url, relayToken)));
    await expect(connectRelay(server.url, relayToken)).rejects.toMatchObject({ status: 429 });
    await Promise.all(relays.map((r) => r.close()));
    const again = await connectRelay(server.url, relayToken);
    await again.close();
  });
});

describe('MAX_SOCKETS_PER_SESSION', () => {
  it('refuses the upgrade past the cap of a session with 429; other sessions still open', async () => {
    const id = await trip();
    const users = [alice, bob, carol];
    const sockets: Opened[] = [];
    for (let i = 0; i < PER_SESSION; i++) sockets.push(await open(id, users[i % 3]));
    expect(await refusedStatus(server.url, id, carol)).toBe(429);
    const elsewhere = await open(await trip(), carol);
    await closeAll([sockets.pop() as Opened]);
    sockets.push(await open(id, carol));
    await closeAll([...sockets, elsewhere]);
  });
});

describe('presence', () => {
  it('sends each socket of a burst of joins a few presence frames, not one per join', async () => {
    const id = await trip();
    const first = await open(id, alice);
    const n = PER_SESSION - 1;
    const users = [alice, bob, carol];
    const burst = await Promise.all(Array.from({ length: n }, (_, i) => open(id, users[i % 3])));
    const all = [first, ...burst];
    // An op after the burst: once its `applied` reached every socket, so had the burst's presence.
    first.send({ type: 'op', opId: 'after-burst', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'B' } });
    await Promise.all(all.map((s) => s.answer('after-burst')));
    const counts = all.map((s) => s.frames.filter((f) => f.type === 'presence').length);
    // Joins are coalesced per turn of the event loop: one frame per turn the burst took (3
    // here on an idle machine; a loaded one may take a few more), not one per join (30).
    expect(Math.max(...counts)).toBeLessThanOrEqual(all.length / 3);
    for (const s of all) {
      const last = s.frames.filter((f) => f.type === 'presence').at(-1);
      expect(last).toEqual({ type: 'presence', online: [ALICE, BOB, CAROL].sort() });
    }
    await closeAll(all);
  });
});

describe('resume', () => {
  it('answers resumes past MAX_OPS_PER_SECOND with rate_limited, like ops', async () => {
    const id = await trip();
    const s = await open(id, alice);
    for (let v = 1; v <= 3; v++) {
      s.send({ type: 'op', opId: `r${v}`, baseVersion: v - 1, op: { kind: 'set', path: ['title'], value: `T${v}` } });
      await s.answer(`r${v}`);
    }
    const from = s.frames.length;
    const resumes = 3 * OPS_PER_SECOND;
    for (let i = 0; i < resumes; i++) s.send({ type: 'resume', since: 0 });
    const answers = () => s.frames.slice(from);
    const limited = () => answers().filter((f) => f.type === 'error' && f.code === Codes.rate_limited).length;
    // Every resume is answered: three applied frames, or one rate_limited error.
    await expect.poll(() => answers().filter((f) => f.type === 'applied').length / 3 + limited()).toBe(resumes);
    expect(limited()).toBeGreaterThanOrEqual(resumes - OPS_PER_SECOND - 2);
    s.close();
  });

  it('answers a resume from further behind than MAX_RESUME_OPS with a snapshot, and replays up to that many', async () => {
    const id = await trip();
    const head = MAX_RESUME_OPS + 100;
    await seedOps(id, head);
    const s = await open(id, alice);
    const from = s.frames.length;
    s.send({ type: 'resume', since: head - MAX_RESUME_OPS - 1 });
    expect(await s.next('snapshot')).toMatchObject({ version: head, state: { title: `v${head}` } });
    expect(s.frames.slice(from).filter((f) => f.type === 'applied')).toEqual([]);
    s.send({ type: 'resume', since: head - MAX_RESUME_OPS });
    await expect.poll(() => s.frames.filter((f) => f.type === 'applied').length).toBe(MAX_RESUME_OPS);
    expect(s.frames.filter((f) => f.type === 'applied').at(-1)).toMatchObject({ version: head });
    s.close();
  });

  it('never reads more than MAX_RESUME_OPS stored ops at once', async () => {
    const id = await trip();
    const head = MAX_RESUME_OPS + 100;
    await seedOps(id, head);
    const ops = await new MiniappRepository(db.pool).opsBetween(id, 0, head + 1);
    expect(ops).toHaveLength(MAX_RESUME_OPS);
    expect(ops[0].version).toBe(1);
  });
});

/** Stores `count` title edits as a session's history (before it is activated) and its checkpoint at the last. */
async function seedOps(id: string, count: number): Promise<void> {
  await db.pool.query(
    `INSERT INTO miniapp_ops (session_id, version, op_id, by_user, op, touched, conn)
     SELECT $1, v, 'seed-' || v, $2, jsonb_build_object('kind', 'set', 'path', '["title"]'::jsonb, 'value', 'v' || v),
            '["title"]'::jsonb, NULL
       FROM generate_series(1, $3::int) AS v`,
    [id, ALICE, count],
  );
  await db.pool.query(
    `UPDATE miniapp_sessions SET version = $2::bigint, state = jsonb_set(state, '{title}', to_jsonb('v' || $2::bigint)) WHERE id = $1`,
    [id, count],
  );
  expect((await api(server.url, 'GET', `/v1/miniapps/${id}`, { token: alice })).body.version).toBe(count);
}
