/**
 * Op retention (README "Miniapp sessions", docs/protocol.md `resume`): ops are kept for
 * OPS_RETENTION_HOURS (24 h) and at least the last 1,000 versions; pruning deletes only ops
 * beyond both. A `resume` whose ops are all kept replays them as `applied` frames (older than
 * the in-memory 256 from the database); one that reaches behind the pruned horizon gets a
 * `snapshot` instead.
 *
 * The server's own pruning timer runs here every OPS_PRUNE_EVERY_MS = 200 ms; the test makes
 * ops old by back-dating them in the database and waits for the timer to act.
 */
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { MAX_STALE_VERSIONS } from '../../actors/miniappSession.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { createTrip } from '../helpers/http.ts';
import { startTestServer } from '../helpers/server.ts';
import { type Opened, openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15554440001';
/** Ops kept whatever their age (ops older than the default 24 h are made 25 h old). */
const KEEP = MAX_STALE_VERSIONS;
const OPS = 1300;

let db: TestDatabase;
let server: RunningServer;
let tripId: string;
let alice: string;

beforeAll(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url, { MAX_OPS_PER_SECOND: '100000', OPS_PRUNE_EVERY_MS: '200' });
  alice = await token(ALICE);
  tripId = await createTrip(server.url, alice);

  const s = await openSocket(server.url, tripId, alice);
  await s.next('snapshot');
  for (let v = 1; v <= OPS; v++) {
    s.send({ type: 'op', opId: `fill-${v}`, baseVersion: v - 1, op: { kind: 'set', path: ['title'], value: `v${v}` } });
  }
  await vi.waitFor(
    () => expect(s.frames.filter((f) => f.type === 'applied' && f.opId.startsWith('fill-'))).toHaveLength(OPS),
    { timeout: 20_000, interval: 50 },
  );
  s.close();
  // Pruning never reaches past the checkpoint, which the group commit writes every 100 ops.
  await vi.waitFor(async () =>
    expect(Number(await scalar('SELECT version FROM miniapp_sessions WHERE id = $1'))).toBe(OPS),
  );
});

async function scalar(sql: string, params: unknown[] = [tripId]): Promise<unknown> {
  const { rows } = await db.pool.query(sql, params);
  return Object.values(rows[0])[0];
}

async function keptVersions(): Promise<{ count: number; min: number; max: number }> {
  const { rows } = await db.pool.query(
    'SELECT count(*)::int AS count, min(version)::int AS min, max(version)::int AS max FROM miniapp_ops WHERE session_id = $1',
    [tripId],
  );
  return rows[0];
}

/** Makes the ops up to `version` look 25 hours old. */
async function age(upToVersion: number): Promise<void> {
  await db.pool.query(
    `UPDATE miniapp_ops SET at = now() - interval '25 hours' WHERE session_id = $1 AND version <= $2`,
    [tripId, upToVersion],
  );
}

/** Waits for the server's pruning to leave exactly `expected`. */
const pruned = (expected: { count: number; min: number; max: number }) =>
  vi.waitFor(async () => expect(await keptVersions()).toEqual(expected), { timeout: 10_000, interval: 50 });

/** Sends `resume` and returns the frames it was answered with (a snapshot, or every applied frame up to the current version). */
async function resume(s: Opened, since: number): Promise<Opened['frames']> {
  const from = s.frames.length;
  s.send({ type: 'resume', since });
  const answer = () => s.frames.slice(from);
  await expect
    .poll(() => answer().some((f) => f.type === 'snapshot' || (f.type === 'applied' && f.version === OPS)), {
      timeout: 10_000,
    })
    .toBe(true);
  return answer();
}

describe('op retention', () => {
  it('keeps ops older than 24 h that are among the last 1,000 versions, and recent ops beyond them', async () => {
    expect(await keptVersions()).toEqual({ count: OPS, min: 1, max: OPS });

    await age(200);
    // 201–300 are beyond the last 1,000 versions, but younger than 24 h.
    await pruned({ count: OPS - 200, min: 201, max: OPS });

    await age(OPS);
    // Everything is older than 24 h now: the last 1,000 versions stay.
    await pruned({ count: KEEP, min: OPS - KEEP + 1, max: OPS });
  });
});

describe('resume after pruning', () => {
  beforeAll(async () => {
    // The state the retention test leaves (a no-op after it): only the last 1,000 versions.
    await age(OPS);
    await pruned({ count: KEEP, min: OPS - KEEP + 1, max: OPS });
  });

  it('answers a resume behind the pruned horizon with a snapshot of the current version', async () => {
    const s = await openSocket(server.url, tripId, alice);
    await s.next('snapshot');
    for (const since of [100, OPS - KEEP - 1]) {
      const answer = await resume(s, since);
      expect(answer.filter((f) => f.type === 'applied')).toEqual([]);
      expect(answer.find((f) => f.type === 'snapshot')).toMatchObject({ version: OPS, state: { title: `v${OPS}` } });
    }
    s.close();
  });

  it('replays every kept op after a resume inside the window, from the database and from memory, in order', async () => {
    const s = await openSocket(server.url, tripId, alice);
    await s.next('snapshot');
    for (const since of [OPS - KEEP, 500]) {
      const answer = await resume(s, since);
      expect(answer.some((f) => f.type === 'snapshot')).toBe(false);
      const versions = answer.flatMap((f) => (f.type === 'applied' ? [f.version] : []));
      expect(versions).toEqual(Array.from({ length: OPS - since }, (_, i) => since + 1 + i));
      expect(answer.find((f) => f.type === 'applied')).toMatchObject({
        opId: `fill-${since + 1}`,
        by: ALICE,
        op: { kind: 'set', path: ['title'], value: `v${since + 1}` },
      });
    }
    s.close();
  });
});
