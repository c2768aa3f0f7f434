/**
 * The group committer against a real PostgreSQL: writes of many actors in lanes committed in
 * parallel, each actor's writes in submission order, the epoch fence, a failed write failing
 * the actor's later ones, batches capped by bytes, and code errors told from connection
 * errors, a kind with a lane of its own, one-statement batches without a transaction block,
 * writers that fence themselves.
 * Poisoned writes failing alone: groupCommitterPoison.test.ts.
 */
import type { PoolClient } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { FENCED, FencedError, GroupCommitter, PACE_BELOW } from '../../src/store/GroupCommitter.ts';
import { leaseEpochs } from '../../src/store/leases.ts';
import { createPool, type Pool } from '../../src/store/pool.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

interface Row {
  actor: string;
  seq: number;
}

let db: TestDatabase;
let pool: Pool;
const log = createLogger({ level: 'silent', format: 'json' });

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, loadConfig({ PG_POOL_MAX: '6' }).pg, log);
  // `pos` numbers the rows in the order PostgreSQL stored them.
  await db.pool.query(
    'CREATE TABLE gc_rows (actor text, seq int, backend int, pos bigserial, PRIMARY KEY (actor, seq))',
  );
  await db.pool.query('CREATE TABLE gc_bytes (seq int PRIMARY KEY, tx bigint)');
  await db.pool.query('CREATE TABLE gc_paced (seq int PRIMARY KEY, tx bigint, at timestamptz)');
  // `alone`: the row was written outside a transaction block (no BEGIN before its statement).
  await db.pool.query(
    'CREATE TABLE gc_own (v int PRIMARY KEY CHECK (v >= 0), alone boolean, backend int, pos bigserial)',
  );
  // `fence`: the writer was given a fence (it ran as one statement, fencing itself).
  await db.pool.query('CREATE TABLE gc_self (actor text, v int, alone boolean, fence boolean, PRIMARY KEY (actor, v))');
});
/** Every committer made here, closed at the end even when its test failed (else `pool.end` waits). */
const made: GroupCommitter[] = [];
afterAll(async () => {
  for (const c of made) c.close();
  await pool.end();
});

function committer(lanes: number, maxBytes = 1 << 20): GroupCommitter {
  const c = new GroupCommitter(pool, { maxBatch: 50, maxBytes, attempts: 2, lanes, log });
  made.push(c);
  c.register<Row>('row', async (client, items) => {
    await client.query(
      `INSERT INTO gc_rows (actor, seq, backend)
       SELECT e.item->>'actor', (e.item->>'seq')::int, pg_backend_pid()
         FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(item, n)
        ORDER BY e.n
       ON CONFLICT DO NOTHING`,
      [JSON.stringify(items)],
    );
  });
  return c;
}

/** Another process activates `actor`: its epoch moves on; resolves with the new one. */
async function takeOverElsewhere(actor: string): Promise<number> {
  const other = committer(1);
  const epoch = await leaseEpochs(other, 'elsewhere')(actor);
  other.close();
  return epoch;
}

describe('the group committer', () => {
  it('commits in parallel lanes, each actor’s writes in the order they were submitted', async () => {
    const c = committer(3);
    const actors = Array.from({ length: 12 }, (_, i) => `test:lanes-${i}`);
    const epochs = await Promise.all(actors.map(leaseEpochs(c, 'here')));
    const settled: Record<string, number[]> = Object.fromEntries(actors.map((a) => [a, []]));
    const writes: Promise<void>[] = [];
    for (let seq = 0; seq < 40; seq++) {
      for (const [i, actor] of actors.entries()) {
        writes.push(
          c.submit<Row>('row', actor, epochs[i], { actor, seq }).then(() => {
            settled[actor].push(seq);
          }),
        );
      }
      // Submissions spread over several turns, so transactions overlap.
      if (seq % 8 === 7) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(writes);
    await c.flush();
    const inOrder = Array.from({ length: 40 }, (_, s) => s);
    for (const actor of actors) expect(settled[actor], `${actor}'s acknowledgements`).toEqual(inOrder);
    const stored = await db.pool.query<{ actor: string; seqs: number[] }>(
      `SELECT actor, array_agg(seq ORDER BY pos) AS seqs FROM gc_rows
        WHERE actor LIKE 'test:lanes-%' GROUP BY actor`,
    );
    for (const r of stored.rows) expect(r.seqs, `${r.actor}'s rows in the order they were stored`).toEqual(inOrder);
    const { rows } = await db.pool.query<{ actor: string; n: string; backends: string }>(
      `SELECT actor, count(*) AS n, count(DISTINCT backend) AS backends FROM gc_rows
        WHERE actor LIKE 'test:lanes-%' GROUP BY actor`,
    );
    expect(rows).toHaveLength(12);
    for (const r of rows) {
      expect(Number(r.n)).toBe(40);
      // One lane per actor: all of its writes went through the same connection.
      expect(Number(r.backends)).toBe(1);
    }
    const lanesUsed = await db.pool.query(
      "SELECT count(DISTINCT backend) AS n FROM gc_rows WHERE actor LIKE 'test:lanes-%'",
    );
    expect(Number(lanesUsed.rows[0].n)).toBeGreaterThan(1);
    c.close();
  });

  it('fails the writes of an actor another owner took over, and every later write of it', async () => {
    const c = committer(2);
    const actor = 'test:fenced';
    const epoch = await leaseEpochs(c, 'here')(actor);
    await c.submit<Row>('row', actor, epoch, { actor, seq: 1 });
    expect(await takeOverElsewhere(actor)).toBe(epoch + 1);
    await expect(c.submit<Row>('row', actor, epoch, { actor, seq: 2 })).rejects.toBeInstanceOf(FencedError);
    await expect(c.submit<Row>('row', actor, epoch, { actor, seq: 3 })).rejects.toThrow(/earlier write/);
    const { rows } = await db.pool.query('SELECT seq FROM gc_rows WHERE actor = $1 ORDER BY seq', [actor]);
    expect(rows.map((r) => r.seq)).toEqual([1]);
    c.close();
  });

  it('fences actors whose keys hold quotes and backslashes as data (the fence is written with literals)', async () => {
    const c = committer(1);
    const odd = ["test:o'brien", 'test:back\\slash', "test:x'); DELETE FROM actor_leases; --", 'test:ünïcode "q"'];
    const epochs = await Promise.all(odd.map(leaseEpochs(c, 'here')));
    await Promise.all(odd.map((actor, i) => c.submit<Row>('row', actor, epochs[i], { actor, seq: 1 })));
    // One of them moves on: only its write is fenced; the others commit with it in one transaction.
    await takeOverElsewhere(odd[2]);
    const outcomes = await Promise.allSettled(
      odd.map((actor, i) => c.submit<Row>('row', actor, epochs[i], { actor, seq: 2 })),
    );
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect((outcomes[2] as PromiseRejectedResult).reason).toBeInstanceOf(FencedError);
    const { rows } = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM actor_leases WHERE key = ANY($1)', [
      odd,
    ]);
    expect(Number(rows[0].n)).toBe(odd.length);
    const stored = await db.pool.query('SELECT actor, seq FROM gc_rows WHERE actor = ANY($1) ORDER BY actor, seq', [
      odd,
    ]);
    expect(stored.rows).toHaveLength(odd.length * 2 - 1);
    c.close();
  });

  it('bumps the epochs of actors activated together in one transaction, twice for a key asked twice', async () => {
    const c = committer(2);
    const epochOf = leaseEpochs(c, 'here');
    const [a1, b1, a2] = await Promise.all([epochOf('test:a'), epochOf('test:b'), epochOf('test:a')]);
    expect([a1, b1, a2]).toEqual([1, 1, 2]);
    const { rows } = await db.pool.query(
      "SELECT key, epoch, owner FROM actor_leases WHERE key IN ('test:a', 'test:b') ORDER BY key",
    );
    expect(rows).toEqual([
      { key: 'test:a', epoch: '2', owner: 'here' },
      { key: 'test:b', epoch: '1', owner: 'here' },
    ]);
    c.close();
  });

  it('caps each transaction by the bytes of its writes as well as by their count, and commits a larger write alone', async () => {
    const c = committer(1, 2500);
    c.register<{ seq: number; pad: string }>('bytes', async (client, items) => {
      await client.query(
        'INSERT INTO gc_bytes (seq, tx) SELECT s, txid_current() FROM unnest($1::int[]) AS s ON CONFLICT DO NOTHING',
        [items.map((i) => i.seq)],
      );
    });
    // About 1,000 bytes each: at most two fit in 2,500 bytes; the last is larger than the cap.
    const items = Array.from({ length: 10 }, (_, seq) => ({ seq, pad: 'x'.repeat(seq === 9 ? 5000 : 1000) }));
    await Promise.all(items.map((item) => c.submit('bytes', null, 0, item)));
    const { rows } = await db.pool.query<{ n: string; seqs: number[] }>(
      'SELECT count(*) AS n, array_agg(seq ORDER BY seq) AS seqs FROM gc_bytes GROUP BY tx ORDER BY min(seq)',
    );
    expect(rows.flatMap((r) => r.seqs)).toEqual(items.map((i) => i.seq));
    for (const r of rows) expect(Number(r.n)).toBeLessThanOrEqual(2);
    expect(rows.at(-1)?.seqs).toEqual([9]);
    c.close();
  });

  it('caps transactions by the sizes a writer gives its items (sizeOf), without serializing them', async () => {
    const c = committer(1, 2500);
    // Items of a few bytes of JSON that say they are 1,000 bytes (a writer's pre-serialized rows).
    c.register<{ seq: number; size: number }>(
      'sized',
      async (client, items) => {
        await client.query(
          'INSERT INTO gc_bytes (seq, tx) SELECT s, txid_current() FROM unnest($1::int[]) AS s ON CONFLICT DO NOTHING',
          [items.map((i) => i.seq)],
        );
      },
      { sizeOf: (i) => i.size },
    );
    const items = Array.from({ length: 6 }, (_, i) => ({ seq: 100 + i, size: 1000 }));
    await Promise.all(items.map((item) => c.submit('sized', null, 0, item)));
    const { rows } = await db.pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM gc_bytes WHERE seq >= 100 GROUP BY tx',
    );
    expect(rows.length).toBeGreaterThanOrEqual(3);
    for (const r of rows) expect(Number(r.n)).toBeLessThanOrEqual(2);
    c.close();
  });

  it('fails a write whose writer throws a TypeError with that error, without retrying it or dropping the connection', async () => {
    const c = committer(1);
    let calls = 0;
    c.register<number>('buggy', async () => {
      calls++;
      throw new TypeError('a bug in the writer');
    });
    await c.submit<Row>('row', null, 0, { actor: 'test:code-error', seq: 1 });
    await expect(c.submit('buggy', null, 0, 1)).rejects.toBeInstanceOf(TypeError);
    // Once as part of the batch, once more alone to find the writes at fault: never as a retry.
    expect(calls).toBe(2);
    await c.submit<Row>('row', null, 0, { actor: 'test:code-error', seq: 2 });
    const { rows } = await db.pool.query(
      "SELECT count(DISTINCT backend) AS n FROM gc_rows WHERE actor = 'test:code-error'",
    );
    expect(Number(rows[0].n), 'connections the lane used').toBe(1);
    c.close();
  });

  it('writes unfenced items (no actor) in any lane', async () => {
    const c = committer(2);
    await Promise.all(
      Array.from({ length: 30 }, (_, seq) => c.submit<Row>('row', null, 0, { actor: 'test:unfenced', seq })),
    );
    const { rows } = await db.pool.query("SELECT count(*) AS n FROM gc_rows WHERE actor = 'test:unfenced'");
    expect(Number(rows[0].n)).toBe(30);
    c.close();
  });

  /**
   * Registers `own`: one statement per batch, which records whether it ran outside a transaction
   * block (the connection idle, 'I', as its last ready-for-query said: no BEGIN before it).
   */
  function withOwnKind(c: GroupCommitter, options: { ownLane?: boolean; oneStatement?: boolean }): void {
    c.register<number>(
      'own',
      async (client, items) => {
        await client.query(
          `INSERT INTO gc_own (v, alone, backend)
           SELECT v, $2, pg_backend_pid() FROM unnest($1::int[]) WITH ORDINALITY AS u(v, n) ORDER BY n`,
          [items, client.getTransactionStatus() === 'I'],
        );
      },
      options,
    );
  }

  it('commits a kind with a lane of its own while the shared lane’s transaction waits on a lock', async () => {
    const c = committer(1);
    withOwnKind(c, { ownLane: true });
    const locker = await db.pool.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE gc_rows IN ACCESS EXCLUSIVE MODE');
      let rowDone = false;
      const row = c.submit<Row>('row', null, 0, { actor: 'test:own-lane', seq: 1 }).then(() => {
        rowDone = true;
      });
      await new Promise((r) => setTimeout(r, 100));
      // Submitted after the blocked row, committed before it, in order among themselves.
      await Promise.all([100, 101, 102].map((v) => c.submit('own', null, 0, v)));
      expect(rowDone, 'the shared lane’s write, still waiting on the lock').toBe(false);
      await locker.query('ROLLBACK');
      await row;
    } finally {
      locker.release();
    }
    const { rows } = await db.pool.query('SELECT v FROM gc_own WHERE v BETWEEN 100 AND 102 ORDER BY pos');
    expect(rows.map((r) => r.v)).toEqual([100, 101, 102]);
    await c.flush();
    c.close();
  });

  it('runs a one-statement kind’s batch without BEGIN and COMMIT, and in a transaction when other writes share it', async () => {
    const c = committer(1);
    withOwnKind(c, { oneStatement: true });
    await Promise.all([200, 201].map((v) => c.submit('own', null, 0, v)));
    // With another kind's write in the same batch, the batch is one transaction again.
    await Promise.all([
      c.submit('own', null, 0, 202),
      c.submit<Row>('row', null, 0, { actor: 'test:one-statement', seq: 1 }),
    ]);
    const { rows } = await db.pool.query('SELECT v, alone FROM gc_own WHERE v BETWEEN 200 AND 202 ORDER BY v');
    expect(rows).toEqual([
      { v: 200, alone: true },
      { v: 201, alone: true },
      { v: 202, alone: false },
    ]);
    c.close();
  });

  it('finds the bad write of a one-statement batch, commits the others and keeps its lane’s connection', async () => {
    const c = committer(1);
    withOwnKind(c, { ownLane: true, oneStatement: true });
    const results = await Promise.allSettled([300, -1, 301, 302].map((v) => c.submit('own', null, 0, v)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/check|constraint/i);
    await c.submit('own', null, 0, 303);
    const { rows } = await db.pool.query(
      'SELECT array_agg(v ORDER BY v) AS vs, count(DISTINCT backend)::int AS backends FROM gc_own WHERE v BETWEEN 300 AND 303',
    );
    expect(rows[0]).toEqual({ vs: [300, 301, 302, 303], backends: 1 });
    c.close();
  });

  /**
   * Registers `self`: a writer fencing itself as the conversations' does (their leases locked
   * `FOR SHARE`, nothing written for an actor whose epoch moved on, `FENCED` returned), one
   * statement unless an item's `v` is negative.
   */
  /** `gc_self` rows of actors matching `like`, as the self-fencing writer stored them. */
  const selfRows = async (like: string) =>
    (await db.pool.query('SELECT actor, v, alone, fence FROM gc_self WHERE actor LIKE $1 ORDER BY actor, v', [like]))
      .rows;

  function withSelfFencingKind(c: GroupCommitter): void {
    c.register<{ actor: string; v: number }>(
      'self',
      async (client, items, fence) => {
        const { rows } = await client.query<{ n: string }>(
          `WITH held AS (
             SELECT f.n FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS f(key, epoch, n)
               JOIN actor_leases l ON l.key = f.key AND l.epoch = f.epoch FOR SHARE OF l),
           ins AS (
             INSERT INTO gc_self (actor, v, alone, fence)
             SELECT e.i->>'actor', abs((e.i->>'v')::int), $4, $5 FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(i, n)
              WHERE NOT $5 OR e.n IN (SELECT n FROM held)
             ON CONFLICT DO NOTHING)
           SELECT n FROM held`,
          [
            JSON.stringify(items),
            fence?.keys ?? [],
            fence?.epochs ?? [],
            client.getTransactionStatus() === 'I',
            fence !== null,
          ],
        );
        const held = new Set(rows.map((r) => Number(r.n) - 1));
        return items.map((_, i) => (fence === null || held.has(i) ? true : FENCED));
      },
      { oneStatement: (item) => item.v >= 0, fencesItself: true },
    );
  }

  it('commits a self-fencing kind’s batch as its one statement, fenced writes included, failing those of a moved-on epoch', async () => {
    const c = committer(1);
    withSelfFencingKind(c);
    const actors = ['test:self-a', 'test:self-b', 'test:self-c'];
    const epochs = await Promise.all(actors.map(leaseEpochs(c, 'here')));
    await c.flush();
    await Promise.all(actors.map((actor, i) => c.submit('self', actor, epochs[i], { actor, v: 1 })));
    await takeOverElsewhere('test:self-b');
    const outcomes = await Promise.allSettled(
      actors.map((actor, i) => c.submit('self', actor, epochs[i], { actor, v: 2 })),
    );
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((outcomes[1] as PromiseRejectedResult).reason).toBeInstanceOf(FencedError);
    await expect(c.submit('self', 'test:self-b', epochs[1], { actor: 'test:self-b', v: 3 })).rejects.toThrow(
      /earlier write/,
    );
    expect(await selfRows('test:self-%')).toEqual([
      { actor: 'test:self-a', v: 1, alone: true, fence: true },
      { actor: 'test:self-a', v: 2, alone: true, fence: true },
      { actor: 'test:self-b', v: 1, alone: true, fence: true },
      { actor: 'test:self-c', v: 1, alone: true, fence: true },
      { actor: 'test:self-c', v: 2, alone: true, fence: true },
    ]);
    c.close();
  });

  it('commits a self-fencing kind in the fenced transaction when its batch is not one statement', async () => {
    const c = committer(1);
    withSelfFencingKind(c);
    const [a, b] = await Promise.all(['test:selftx-a', 'test:selftx-b'].map(leaseEpochs(c, 'here')));
    // An item the writer makes more than one statement of, or another kind's write, in the batch.
    await Promise.all([
      c.submit('self', 'test:selftx-a', a, { actor: 'test:selftx-a', v: -1 }),
      c.submit('self', 'test:selftx-b', b, { actor: 'test:selftx-b', v: 1 }),
    ]);
    await Promise.all([
      c.submit('self', 'test:selftx-a', a, { actor: 'test:selftx-a', v: 2 }),
      c.submit<Row>('row', 'test:selftx-b', b, { actor: 'test:selftx-b', seq: 1 }),
    ]);
    await takeOverElsewhere('test:selftx-a');
    const outcomes = await Promise.allSettled([
      c.submit('self', 'test:selftx-a', a, { actor: 'test:selftx-a', v: -3 }),
      c.submit('self', 'test:selftx-b', b, { actor: 'test:selftx-b', v: 3 }),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'fulfilled']);
    expect((outcomes[0] as PromiseRejectedResult).reason).toBeInstanceOf(FencedError);
    // A write of no actor is never given to the writer with a fence (it would be no actor's to hold).
    await expect(c.submit('self', null, 0, { actor: 'test:unowned-self', v: 4 })).resolves.toBe(true);
    expect(await selfRows('test:selftx-%')).toEqual([
      { actor: 'test:selftx-a', v: 1, alone: false, fence: false },
      { actor: 'test:selftx-a', v: 2, alone: false, fence: false },
      { actor: 'test:selftx-b', v: 1, alone: false, fence: false },
      { actor: 'test:selftx-b', v: 3, alone: false, fence: false },
    ]);
    expect(await selfRows('test:unowned-self')).toEqual([
      { actor: 'test:unowned-self', v: 4, alone: false, fence: false },
    ]);
    c.close();
  });

  it('retries a one-statement batch on a new connection when its lane’s connection was killed', async () => {
    const c = committer(1);
    withOwnKind(c, { ownLane: true, oneStatement: true });
    await c.submit('own', null, 0, 400);
    const first = await db.pool.query('SELECT backend FROM gc_own WHERE v = 400');
    await db.pool.query('SELECT pg_terminate_backend($1)', [first.rows[0].backend]);
    await new Promise((r) => setTimeout(r, 50));
    await c.submit('own', null, 0, 401);
    const { rows } = await db.pool.query('SELECT backend, alone FROM gc_own WHERE v = 401');
    expect(rows[0].backend).not.toBe(first.rows[0].backend);
    expect(rows[0].alone).toBe(true);
    c.close();
  });

  it('paces a lane’s commits of a paced kind by intervalMs while writes keep coming, never a lone writer’s nor another kind’s', async () => {
    const interval = 200;
    const c = new GroupCommitter(pool, {
      maxBatch: 50,
      maxBytes: 1 << 20,
      attempts: 2,
      lanes: 1,
      intervalMs: interval,
      log,
    });
    made.push(c);
    // A batch holding a write ≥ 100 takes 50 ms: writes 10 ms apart arrive while it commits.
    const writer = async (client: PoolClient, items: number[]) => {
      await client.query(
        `WITH pause AS (SELECT pg_sleep(CASE WHEN max(s) >= 100 THEN 0.05 ELSE 0 END) FROM unnest($1::int[]) AS s)
         INSERT INTO gc_paced (seq, tx, at) SELECT s, txid_current(), clock_timestamp() FROM unnest($1::int[]) AS s, pause`,
        [items],
      );
    };
    c.register<number>('paced', writer, { paced: true });
    c.register<number>('brisk', writer);
    const txs = async (from: number, to: number) =>
      (
        await db.pool.query<{ n: string; at: Date }>(
          'SELECT count(*) AS n, min(at) AS at FROM gc_paced WHERE seq BETWEEN $1 AND $2 GROUP BY tx ORDER BY min(at)',
          [from, to],
        )
      ).rows;
    const burst = async (kind: string, from: number) => {
      const writes: Promise<void>[] = [];
      for (let seq = from; seq < from + 10; seq++) {
        writes.push(c.submit(kind, null, 0, seq));
        await new Promise((r) => setTimeout(r, 10));
      }
      await Promise.all(writes);
      const rows = await txs(from, from + 9);
      expect(rows.reduce((n, r) => n + Number(r.n), 0)).toBe(10);
      return rows;
    };

    // One writer waiting for each answer before its next write: each commits at once.
    const started = performance.now();
    for (let seq = 0; seq < 5; seq++) await c.submit('paced', null, 0, seq);
    expect(performance.now() - started).toBeLessThan(interval);
    expect((await txs(0, 4)).length).toBe(5);

    // Ten writes 10 ms apart, each commit taking 50 ms: the first goes at once, the rest are
    // gathered (one commit each, unpaced), the next commit starting an interval after it.
    const paced = await burst('paced', 100);
    expect(paced.length).toBeGreaterThanOrEqual(2);
    expect(paced.length).toBeLessThanOrEqual(3);
    expect(Number(paced[0].n)).toBe(1);
    // The statements' clocks are read after taking a connection and a round trip or two, whose
    // times vary on a loaded machine (CI once read 192 ms for 200): the spacing is checked
    // against `spaced`, well above the ~50 ms an unpaced commit follows the last one by.
    const spaced = interval * 0.75;
    for (let i = 1; i < paced.length; i++)
      expect(paced[i].at.getTime() - paced[i - 1].at.getTime()).toBeGreaterThanOrEqual(spaced);

    // The same burst of a kind not paced: each commit starts as soon as the last one is done.
    const brisk = await burst('brisk', 200);
    expect(brisk.length).toBeGreaterThanOrEqual(3);
    const gaps = brisk.slice(1).map((r, i) => r.at.getTime() - brisk[i].at.getTime());
    expect(Math.max(...gaps)).toBeLessThan(interval / 2);

    // A paced commit of PACE_BELOW writes or more: the next one is not paced.
    const first = c.submit('paced', null, 0, 300);
    await new Promise((r) => setTimeout(r, 5));
    const many = Array.from({ length: PACE_BELOW }, (_, k) => c.submit('paced', null, 0, 301 + k));
    await new Promise((r) => setTimeout(r, interval + 5));
    const last = c.submit('paced', null, 0, 301 + PACE_BELOW);
    await Promise.all([first, ...many, last]);
    const big = await txs(300, 301 + PACE_BELOW);
    expect(big.map((r) => Number(r.n))).toEqual([1, PACE_BELOW, 1]);
    expect(big[1].at.getTime() - big[0].at.getTime()).toBeGreaterThanOrEqual(spaced);
    expect(big[2].at.getTime() - big[1].at.getTime()).toBeLessThan(interval / 2);
    c.close();
  });
});
