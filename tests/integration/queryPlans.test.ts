/**
 * The hot queries use their indexes once the tables are large (the predecessor's slow
 * queries): each table gets 50k+ rows, then EXPLAIN must show the named index — for the
 * statements the server keeps prepared, in their generic plan too (the plan PostgreSQL settles
 * on after a prepared statement's first five runs).
 */
import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import type { ContainerTag } from '../../src/memory/containerTag.ts';
import { MemoryStore, memoryQueries, searchTerms } from '../../src/memory/MemoryStore.ts';
import { createLogger } from '../../src/observability/logger.ts';
import {
  ConversationRepository,
  commitStatement,
  conversationQueries,
  fencedCommitStatement,
} from '../../src/store/conversationRepository.ts';
import { fenceQuery } from '../../src/store/GroupCommitter.ts';
import { miniappQueries, miniappStatements } from '../../src/store/miniappRepository.ts';
import { createPool, type Pool, prepared, query } from '../../src/store/pool.ts';
import { relayQueries } from '../../src/store/relayRepository.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';

let db: TestDatabase;
const ROWS = 60_000;

beforeAll(async () => {
  db = await createTestDatabase();
  const q = (sql: string) => db.pool.query(sql);
  await q(`INSERT INTO miniapp_sessions (id, app, owner, state, version, is_active)
           SELECT 'ms_' || g, 'trip-planner', '+1555' || (g % 5000), '{}', 0, g % 10 = 0 FROM generate_series(1, ${ROWS}) g`);
  await q(`INSERT INTO miniapp_participants (session_id, user_id)
           SELECT 'ms_' || g, '+1555' || (g % 5000) FROM generate_series(1, ${ROWS}) g`);
  await q(`INSERT INTO miniapp_ops (session_id, version, op_id, by_user, op, touched)
           SELECT 'ms_' || (g % 600 + 1), g / 600 + 1, 'o' || g, '+1', '{"kind":"set","path":["title"],"value":"x"}', '["title"]'
             FROM generate_series(0, ${ROWS * 2 - 1}) g`);
  await q(`INSERT INTO conversations (key, kind, persona, chat_guid)
           SELECT 'conv_' || g, 'direct', 'sage', 'chat' || g FROM generate_series(1, 1000) g`);
  await q(`INSERT INTO messages (id, conversation_key, sender, direction, text, created_at)
           SELECT 'm' || g, 'conv_' || (g % 1000 + 1), '+1555' || (g % 3000), 'in', 'hello number ' || g, now() - g * interval '1 second'
             FROM generate_series(1, ${ROWS}) g`);
  await q(`INSERT INTO memories (container_tag, content)
           SELECT 'user_+1555' || (g % 2000) || '_persona_sage', 'likes topic' || (g % 997) || ' and city ' || g FROM generate_series(1, ${ROWS}) g`);
  await q(
    `INSERT INTO relationship_state (user_id, persona_id) SELECT '+1555' || g, 'sage' FROM generate_series(1, ${ROWS}) g`,
  );
  await q(`INSERT INTO relay_inbox (event_id, conversation_key, payload, status)
           SELECT 'evt_' || g, 'conv_1', '{}', CASE WHEN g % 1000 = 0 THEN 'pending' ELSE 'processed' END FROM generate_series(1, ${ROWS}) g`);
  await q(`INSERT INTO relay_outbox (id, chat, conversation_key, payload, status)
           SELECT 'out_' || g, 'chat' || (g % 100), 'conv_1', '{}', CASE WHEN g % 1000 = 0 THEN 'pending' ELSE 'acked' END FROM generate_series(1, ${ROWS}) g`);
  await q(`INSERT INTO oauth_tokens (user_id, provider, enc_access, expires_at)
           SELECT '+1555' || g, 'google', 'x', now() + g * interval '1 minute' FROM generate_series(1, ${ROWS}) g`);
  await q(
    `INSERT INTO actor_leases (key, epoch, owner) SELECT 'miniapp:ms_' || g, 1, 'n' FROM generate_series(1, ${ROWS}) g`,
  );
  await q('ANALYZE');
}, 120_000);

/** Index names in an `EXPLAIN (FORMAT JSON)` answer. */
function indexNames(rows: { 'QUERY PLAN': { Plan: Record<string, unknown> }[] }[]): string[] {
  const names: string[] = [];
  const walk = (node: Record<string, unknown>) => {
    if (typeof node['Index Name'] === 'string') names.push(node['Index Name']);
    for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
  };
  walk(rows[0]['QUERY PLAN'][0].Plan);
  return names;
}

/** Index names in the plan of `sql`. */
async function indexesUsed(sql: string, params: unknown[] = []): Promise<string[]> {
  return indexNames((await db.pool.query(`EXPLAIN (FORMAT JSON) ${sql}`, params)).rows);
}

/** Index names in the generic plan of `sql` prepared (what a prepared statement runs after its first five runs). */
async function genericIndexesUsed(sql: string, params: unknown[]): Promise<string[]> {
  const client = await db.pool.connect();
  try {
    await client.query(`PREPARE generic_probe AS ${sql}`);
    await client.query('SET plan_cache_mode = force_generic_plan');
    // EXECUTE takes its arguments as literals (they are coerced to the statement's parameter types).
    const literal = (v: unknown): string =>
      v === null
        ? 'NULL'
        : Array.isArray(v)
          ? client.escapeLiteral(`{${v.map((x) => (x === null ? 'NULL' : JSON.stringify(String(x)))).join(',')}}`)
          : client.escapeLiteral(v instanceof Date ? v.toISOString() : String(v));
    return indexNames(
      (await client.query(`EXPLAIN (FORMAT JSON) EXECUTE generic_probe(${params.map(literal).join(', ')})`)).rows,
    );
  } finally {
    await client.query('DEALLOCATE generic_probe; RESET plan_cache_mode').catch(() => undefined);
    client.release();
  }
}

/** The texts of the statements the server prepares (`prepared` in src/store/pool.ts). */
const PREPARED = new Set<string>([
  miniappQueries.access,
  conversationQueries.page,
  conversationQueries.turns,
  memoryQueries.recall,
  relayQueries.ack,
  commitStatement,
  fencedCommitStatement,
  miniappStatements.insertOpsFenced,
]);

describe('query plans at 50k+ rows', () => {
  const cases: [string, string, unknown[], string][] = [
    ['the upgrade authorization', miniappQueries.access, ['ms_42', '+155542'], 'miniapp_participants_pkey'],
    ['rehydration of a session', miniappQueries.session, ['ms_42'], 'miniapp_sessions_pkey'],
    ['the participant list', miniappQueries.participants, ['ms_42'], 'miniapp_participants_pkey'],
    ['ops after a version (resume, rehydration)', miniappQueries.opsAfter, ['ms_42', 150], 'miniapp_ops_pkey'],
    ['ops between versions (conflict checks)', miniappQueries.opsBetween, ['ms_42', 10, 20], 'miniapp_ops_pkey'],
    [
      'a person’s open miniapps',
      'SELECT id FROM miniapp_sessions WHERE owner = $1 AND is_active',
      ['+155542'],
      'miniapp_sessions_owner_active_idx',
    ],
    ['message history', conversationQueries.page, ['conv_7', new Date(), 50], 'messages_conversation_created_idx'],
    [
      'a conversation’s recent turns',
      conversationQueries.turns,
      [
        ['conv_7', 'conv_8'],
        [21, 21],
        ['+155542', '+155543'],
        ['sage', 'sage'],
      ],
      'messages_conversation_created_idx',
    ],
    [
      'the sender’s relationship stage',
      conversationQueries.turns,
      [
        ['conv_7', 'conv_8'],
        [21, 21],
        ['+155542', '+155543'],
        ['sage', 'sage'],
      ],
      'relationship_state_pkey',
    ],
    ['messages by sender', 'SELECT id FROM messages WHERE sender = $1', ['+155542'], 'messages_sender_idx'],
    ['conversations owing an answer (the sweep)', conversationQueries.owing, [3000, 500], 'conversations_owing_idx'],
    [
      'latest memories of a container',
      memoryQueries.recall,
      [['user_+155542_persona_sage'], [null], 5],
      'memories_container_created_idx',
    ],
    [
      'relationship state',
      'SELECT stage FROM relationship_state WHERE user_id = $1 AND persona_id = $2',
      ['+155542', 'sage'],
      'relationship_state_pkey',
    ],
    [
      'pending inbox rows',
      "SELECT seq FROM relay_inbox WHERE status = 'pending' ORDER BY seq LIMIT 100",
      [],
      'relay_inbox_pending_idx',
    ],
    [
      'pending outbox rows',
      "SELECT id FROM relay_outbox WHERE status = 'pending' ORDER BY seq LIMIT 100",
      [],
      'relay_outbox_pending_idx',
    ],
    [
      'expiring OAuth tokens',
      "SELECT user_id FROM oauth_tokens WHERE expires_at < now() + interval '10 minutes'",
      [],
      'oauth_tokens_expires_idx',
    ],
    [
      'acknowledged sends (by id, not through the pending rows)',
      relayQueries.ack,
      [['out_5', 'out_1000', 'out_7']],
      'relay_outbox_pkey',
    ],
    [
      'the inbox rows a batch of conversation commits processes (by seq, not through the pending rows)',
      commitStatement,
      ['[]', '[]', '[]', '[]', '[]', ['conv_1', 'conv_1'], [5, 1000]],
      'relay_inbox_pkey',
    ],
    ...(['relay_inbox_pkey', 'actor_leases_pkey'] as const).map((index): [string, string, unknown[], string] => [
      'a batch of conversation commits fencing itself (its leases, then its inbox rows)',
      fencedCommitStatement,
      [
        '[]',
        '[]',
        '[]',
        '[]',
        '[]',
        ['conv_1', 'conv_2'],
        [5, 1000],
        ['conv_1', 'conv_2'],
        ['miniapp:ms_1', 'miniapp:ms_2'],
        [1, 1],
      ],
      index,
    ]),
    [
      'a batch of miniapp ops fencing itself',
      miniappStatements.insertOpsFenced,
      ['[]', ['ms_1', 'ms_2'], ['miniapp:ms_1', 'miniapp:ms_2'], [1, 1]],
      'actor_leases_pkey',
    ],
    [
      'the epoch fence of a group commit (200 actors)',
      fenceQuery(new Map(Array.from({ length: 200 }, (_, i) => [`miniapp:ms_${i * 97 + 1}`, 1]))),
      [],
      'actor_leases_pkey',
    ],
    [
      'the epoch fence of a group commit (1 actor)',
      fenceQuery(new Map([['miniapp:ms_42', 1]])),
      [],
      'actor_leases_pkey',
    ],
  ];
  for (const [what, sql, params, index] of cases) {
    it(`uses ${index} for ${what}`, async () => {
      expect(await indexesUsed(sql, params)).toContain(index);
    });
    if (PREPARED.has(sql))
      it(`uses ${index} for ${what} in its generic plan (the statement is prepared)`, async () => {
        expect(await genericIndexesUsed(sql, params)).toContain(index);
      });
  }

  /** The server's pool with one connection (every run meets the statements it prepared). */
  const oneConnection = (env: Record<string, string> = {}) => {
    const pool = createPool(
      db.url,
      loadConfig({ PG_POOL_MAX: '3', ...env }).pg,
      createLogger({ level: 'silent', format: 'json' }),
    );
    pool.options.max = 1;
    return pool;
  };

  it('keeps its hot statements prepared on each connection, planned once they settle on a generic plan', async () => {
    const pool = oneConnection();
    try {
      const repo = new ConversationRepository(pool);
      for (let i = 0; i < 8; i++) expect(await repo.page('conv_7', new Date(), 50)).toContain('"messages"');
      const { rows } = await pool.query<{ name: string; statement: string; generic_plans: string }>(
        'SELECT name, statement, generic_plans FROM pg_prepared_statements',
      );
      expect(rows).toEqual([
        { name: 'conversation_page', statement: conversationQueries.page, generic_plans: expect.any(String) },
      ]);
      expect(Number(rows[0].generic_plans)).toBeGreaterThanOrEqual(3);
    } finally {
      await pool.end();
    }
  });

  it('drops the plans of its prepared statements every PG_PLAN_REFRESH_MS, keeping the statements prepared', async () => {
    const pool = oneConnection({ PG_PLAN_REFRESH_MS: '300' });
    const discards: string[] = [];
    // The pool's connections are node-postgres clients: what they send goes through this method.
    const original = pg.Client.prototype.query;
    const spy = vi.spyOn(pg.Client.prototype, 'query').mockImplementation(function (
      this: pg.Client,
      ...args: unknown[]
    ) {
      if (args[0] === 'DISCARD PLANS') discards.push(args[0]);
      return (original as (...a: unknown[]) => unknown).apply(this, args) as never;
    });
    const statement = prepared('refresh_probe', 'SELECT count(*)::int AS n FROM conversations WHERE key = $1');
    try {
      for (let i = 0; i < 7; i++) expect((await query(pool, statement, ['conv_7'])).rows).toEqual([{ n: 1 }]);
      expect(discards).toHaveLength(0);
      await new Promise((r) => setTimeout(r, 350));
      // Statements that are not prepared plan every run anyway: they never wait for a drop.
      await pool.query('SELECT 1');
      expect(discards).toHaveLength(0);
      expect((await query(pool, statement, ['conv_8'])).rows).toEqual([{ n: 1 }]);
      expect(discards).toHaveLength(1);
      expect((await query(pool, statement, ['nobody'])).rows).toEqual([{ n: 0 }]);
      expect(discards).toHaveLength(1);
      const { rows } = await pool.query('SELECT name FROM pg_prepared_statements');
      expect(rows).toEqual([{ name: 'refresh_probe' }]);
    } finally {
      spy.mockRestore();
      await pool.end();
    }
  });

  /** The indexes of `memories` that lead with `container_tag`: a scan of one either reads one container only. */
  const CONTAINER_INDEXES = ['memories_container_created_idx', 'memories_container_content_key'];

  it('searches the memories of one container only, through a container index (never a scan of every container)', async () => {
    const used = await indexesUsed(memoryQueries.recall, [['user_+155542_persona_sage'], ['topic5 | city'], 5]);
    // Both halves read the container through an index keyed by it: the full-text match and the latest
    // (the latest in date order, so through the one that keeps it).
    expect(used).toHaveLength(2);
    for (const name of used) expect(CONTAINER_INDEXES).toContain(name);
    expect(used).toContain('memories_container_created_idx');
  });

  it('reads every container of a batched recall through a container index', async () => {
    const tags = ['user_+15551_persona_sage', 'user_+15552_persona_sage', 'user_+15553_persona_sage'];
    const used = await indexesUsed(memoryQueries.recall, [tags, ['topic5 | city', null, 'city'], 5]);
    expect(used.length).toBeGreaterThan(0);
    for (const name of used) expect(CONTAINER_INDEXES).toContain(name);
  });

  it('answers concurrent recalls in shared statements, each with exactly what its own container alone gives', async () => {
    let statements = 0;
    const counting = new Proxy(db.pool, {
      get(target, prop, receiver) {
        if (prop === 'query')
          return (...args: Parameters<typeof target.query>) => {
            statements++;
            return (target.query as (...a: unknown[]) => unknown).apply(target, args);
          };
        return Reflect.get(target, prop, receiver);
      },
    }) as unknown as Pool;
    const store = new MemoryStore(counting);
    const asks = Array.from({ length: 60 }, (_, i) => ({
      tag: `user_+1555${((i * 37) % 1900) + 100}_persona_sage` as ContainerTag,
      text: ['what about topic5 and the city', 'hello', 'likes topic', ''][i % 4] + (i % 3 === 0 ? ` topic${i}` : ''),
    }));
    const got = await Promise.all(asks.map((a) => store.recall(a.tag, a.text)));
    expect(statements).toBeLessThan(asks.length / 4);
    // The reference: one container at a time, as the recall was before it was batched.
    const single = `(SELECT id, content FROM (SELECT id, content, tsv, created_at FROM memories WHERE container_tag = $1 OFFSET 0) mine
                      WHERE $2::text IS NOT NULL AND tsv @@ to_tsquery('english', $2)
                      ORDER BY ts_rank(tsv, to_tsquery('english', $2)) DESC, created_at DESC, id DESC LIMIT 5)
                    UNION ALL
                    (SELECT id, content FROM memories WHERE container_tag = $1 ORDER BY created_at DESC, id DESC LIMIT 5)`;
    for (const [i, a] of asks.entries()) {
      const { rows } = await db.pool.query<{ id: string; content: string }>(single, [a.tag, searchTerms(a.text)]);
      const expected = [...new Map(rows.map((r) => [r.id, r.content])).values()];
      expect(expected.length).toBeGreaterThan(0);
      expect(got[i]).toEqual(expected);
    }
  });

  it('answers concurrent turns reads in shared statements, each with its own conversation and sender', async () => {
    const repo = new ConversationRepository(db.pool);
    const asks = Array.from({ length: 40 }, (_, i) => ({
      key: `conv_${((i * 13) % 1000) + 1}`,
      user: `+1555${i % 7}`,
    }));
    const got = await Promise.all(asks.map((a) => repo.turns(a.key, 21, a.user, 'sage')));
    for (const [i, a] of asks.entries()) {
      const { rows } = await db.pool.query<{ id: string }>(
        'SELECT id FROM messages WHERE conversation_key = $1 ORDER BY created_at DESC LIMIT 21',
        [a.key],
      );
      expect(got[i].messages.map((m) => m.id)).toEqual(rows.map((r) => r.id));
      const stage = await db.pool.query<{ stage: string }>(
        'SELECT stage FROM relationship_state WHERE user_id = $1 AND persona_id = $2',
        [a.user, 'sage'],
      );
      expect(got[i].stage).toBe(stage.rows[0]?.stage ?? 'new');
    }
  });
});
