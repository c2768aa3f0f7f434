/**
 * A bad write fails alone (issue 7): writes PostgreSQL refuses on their data — U+0000 or a
 * lone surrogate in jsonb, U+0000 in text, a CHECK violation — or on which a writer's own code
 * throws, put at random positions of random batches over several kinds and actors, fail alone:
 * every other write commits, and each actor's stored writes stay a prefix of what it submitted.
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { GroupCommitter } from '../../src/store/GroupCommitter.ts';
import { leaseEpochs } from '../../src/store/leases.ts';
import { createPool, type Pool } from '../../src/store/pool.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

interface Item {
  run: number;
  kind: Kind;
  actor: string;
  seq: number;
  body: string;
}

type Kind = 'json' | 'arrays' | 'code';
const KINDS: Kind[] = ['json', 'arrays', 'code'];
/** Bodies each writer's statement (or code) refuses. */
const POISONS: Record<Kind, string[]> = {
  // jsonb refuses both escapes (22P05); the CHECK refuses 'refused' (23514).
  json: ['bad\u0000', 'bad\ud800', 'refused'],
  // A text parameter with U+0000 is refused (22021); lone surrogates would be mangled, not refused.
  arrays: ['bad\u0000', 'refused'],
  // The writer's own code throws on it (a TypeError, which is no connection error).
  code: ['explode', 'refused'],
};

let db: TestDatabase;
let pool: Pool;
const log = createLogger({ level: 'silent', format: 'json' });

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, loadConfig({ PG_POOL_MAX: '6' }).pg, log);
  onCleanup(() => pool.end());
  await db.pool.query(
    `CREATE TABLE gc_poison (
       run int, kind text, actor text, seq int, body text NOT NULL CHECK (body <> 'refused'),
       pos bigserial, PRIMARY KEY (run, kind, actor, seq))`,
  );
});

function committer(options: { lanes: number; maxBatch: number; maxBytes: number }): GroupCommitter {
  const c = new GroupCommitter(pool, { ...options, attempts: 2, log });
  const viaJson = async (client: Parameters<Parameters<GroupCommitter['register']>[1]>[0], items: Item[]) => {
    await client.query(
      `INSERT INTO gc_poison (run, kind, actor, seq, body)
       SELECT (e.item->>'run')::int, e.item->>'kind', e.item->>'actor', (e.item->>'seq')::int, e.item->>'body'
         FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(item, n)
        ORDER BY e.n
       ON CONFLICT DO NOTHING`,
      [JSON.stringify(items)],
    );
  };
  c.register<Item>('json', viaJson);
  c.register<Item>('arrays', async (client, items) => {
    await client.query(
      `INSERT INTO gc_poison (run, kind, actor, seq, body)
       SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::int[], $5::text[]) ON CONFLICT DO NOTHING`,
      [
        items.map((i) => i.run),
        items.map((i) => i.kind),
        items.map((i) => i.actor),
        items.map((i) => i.seq),
        items.map((i) => i.body),
      ],
    );
  });
  c.register<Item>('code', async (client, items) => {
    for (const item of items) {
      if (item.body === 'explode') throw new TypeError('the writer cannot handle this item');
    }
    await viaJson(client, items);
  });
  return c;
}

interface Planned {
  kind: Kind;
  /** Index of the actor, or null for an unfenced write. */
  actor: number | null;
  /** Index into the kind's poisons, or null for a valid write. */
  poison: number | null;
}

const planned: fc.Arbitrary<Planned> = fc.record({
  kind: fc.constantFrom(...KINDS),
  actor: fc.option(fc.integer({ min: 0, max: 3 }), { nil: null, freq: 4 }),
  poison: fc.option(fc.nat(), { nil: null, freq: 5 }),
});

let runs = 0;

/** Submits `plan` in one turn and checks every outcome and every stored row. */
async function check(plan: Planned[], options: { lanes: number; maxBatch: number; maxBytes: number }) {
  const run = ++runs;
  const c = committer(options);
  const actorKey = (a: number | null) => (a === null ? null : `test:poison-${run}-${a}`);
  const keys = [...new Set(plan.map((p) => actorKey(p.actor)).filter((k): k is string => k !== null))];
  const epochs = new Map(await Promise.all(keys.map(async (k) => [k, await leaseEpochs(c, 'here')(k)] as const)));
  const items: Item[] = plan.map((p, seq) => ({
    run,
    kind: p.kind,
    actor: actorKey(p.actor) ?? 'none',
    seq,
    body: p.poison === null ? `valid ${seq}` : POISONS[p.kind][p.poison % POISONS[p.kind].length],
  }));
  const settled = await Promise.allSettled(
    plan.map((p, i) => {
      const key = actorKey(p.actor);
      return c.submit<Item>(p.kind, key, key === null ? 0 : (epochs.get(key) as number), items[i]);
    }),
  );
  await c.flush();
  c.close();

  // What must hold: an unfenced write commits unless poisoned; an actor's writes commit up to
  // its first poisoned one, and that one and every later one fail.
  const firstPoisoned = new Map<string, number>();
  plan.forEach((p, i) => {
    const key = actorKey(p.actor);
    if (p.poison !== null && key !== null && !firstPoisoned.has(key)) firstPoisoned.set(key, i);
  });
  const expected = plan.map((p, i) => {
    const key = actorKey(p.actor);
    if (key === null) return p.poison === null;
    return i < (firstPoisoned.get(key) ?? Number.POSITIVE_INFINITY);
  });
  expect(
    settled.map((s) => s.status === 'fulfilled'),
    `outcomes of ${JSON.stringify(plan)}`,
  ).toEqual(expected);
  const { rows } = await db.pool.query<{ seq: number }>('SELECT seq FROM gc_poison WHERE run = $1 ORDER BY seq', [run]);
  expect(rows.map((r) => r.seq)).toEqual(expected.flatMap((ok, i) => (ok ? [i] : [])));
  // Within a kind and actor, rows were stored in submission order. (Unfenced writes promise no
  // order: with several lanes they take whichever is least busy.)
  const order = await db.pool.query<{ seqs: number[] }>(
    "SELECT array_agg(seq ORDER BY pos) AS seqs FROM gc_poison WHERE run = $1 AND actor <> 'none' GROUP BY kind, actor",
    [run],
  );
  for (const { seqs } of order.rows) expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
}

describe('the group committer with poisoned writes', () => {
  it('commits every write of other kinds and actors in the same transaction when one write is refused', async () => {
    const plan: Planned[] = [
      { kind: 'json', actor: 0, poison: 0 },
      ...Array.from({ length: 20 }, (_, i): Planned => ({ kind: KINDS[i % 3], actor: 1, poison: null })),
      { kind: 'arrays', actor: null, poison: 0 },
      { kind: 'json', actor: 2, poison: null },
    ];
    await check(plan, { lanes: 1, maxBatch: 100, maxBytes: 1 << 20 });
  });

  it('fails exactly the poisoned writes (and each actor’s writes after its first) at random positions of random batches', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(planned, { minLength: 1, maxLength: 50 }),
        fc.record({
          lanes: fc.integer({ min: 1, max: 3 }),
          maxBatch: fc.integer({ min: 1, max: 60 }),
          maxBytes: fc.integer({ min: 100, max: 8000 }),
        }),
        async (plan, options) => check(plan, options),
      ),
      { numRuns: 40 },
    );
  });
});
