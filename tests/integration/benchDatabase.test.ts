/**
 * The benchmarks' own PostgreSQL clients. An interrupted run drops its database `WITH (FORCE)`
 * while some of its clients sit idle (a commit-rate probe's connections that finished their
 * window first, the relay benchmark's backlog reader): the server ending them must not end the
 * process before its cleanup is done.
 */
import { describe, expect, inject, it } from 'vitest';
import { benchClient, openBenchDatabase } from '../../bench/lib/database.ts';

describe('benchClient', () => {
  it('survives its database being dropped under it while idle; its next query fails with its own error', async () => {
    const db = await openBenchDatabase({ BENCH_PG_ADMIN_URL: inject('pgAdminUrl') });
    const client = benchClient(db.url);
    await client.connect();
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    const ended = new Promise((resolve) => client.once('end', resolve));
    await db.drop();
    await ended;
    await expect(client.query('SELECT 1')).rejects.toThrow();
    await client.end().catch(() => {});
  });
});
