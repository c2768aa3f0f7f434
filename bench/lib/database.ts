/**
 * The benchmark's PostgreSQL: a fresh database of its own (dropped at the end) unless
 * BENCH_DATABASE_URL names one, and the peer figure: the same server's single-row commit rate
 * (a pgbench-style loop of one-row autocommit INSERTs from N concurrent clients).
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import pg from 'pg';

export interface BenchDatabase {
  url: string;
  /** Created by the benchmark (and dropped by `drop`). */
  owned: boolean;
  drop(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export function defaultAdminUrl(env: NodeJS.ProcessEnv): string {
  return env.BENCH_PG_ADMIN_URL ?? `postgres://${encodeURIComponent(os.userInfo().username)}@127.0.0.1:5432/postgres`;
}

/**
 * A client of the benchmark's own. An idle client whose connection the server ends (the
 * benchmark's database dropped `WITH (FORCE)` by an interrupted run's cleanup) emits `error`,
 * which with no listener ends the process before its cleanup is done; its next query fails
 * with its own error anyway.
 */
export function benchClient(url: string): pg.Client {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  return client;
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = benchClient(url);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

export async function openBenchDatabase(env: NodeJS.ProcessEnv): Promise<BenchDatabase> {
  if (env.BENCH_DATABASE_URL) {
    const url = env.BENCH_DATABASE_URL;
    return {
      url,
      owned: false,
      drop: () => withClient(url, (c) => c.query('DROP TABLE IF EXISTS bench_commit').then(() => undefined)),
    };
  }
  const admin = defaultAdminUrl(env);
  const name = `archety_bench_${randomBytes(5).toString('hex')}`;
  await withClient(admin, (c) => c.query(`CREATE DATABASE ${name}`));
  return {
    url: withDatabase(admin, name),
    owned: true,
    drop: () => withClient(admin, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).then(() => undefined)),
  };
}

export interface PgSettings {
  version: string;
  fsync: string;
  synchronousCommit: string;
}

export function pgSettings(url: string): Promise<PgSettings> {
  return withClient(url, async (c) => {
    const one = async (name: string) => (await c.query(`SHOW ${name}`)).rows[0][name] as string;
    return {
      version: await one('server_version'),
      fsync: await one('fsync'),
      synchronousCommit: await one('synchronous_commit'),
    };
  });
}

/** Rows of `miniapp_ops`: every op the server stored. */
export function storedOps(url: string): Promise<number> {
  return withClient(url, async (c) => Number((await c.query('SELECT count(*) AS n FROM miniapp_ops')).rows[0].n));
}

export interface CommitRate {
  txPerSecond: number;
  meanMs: number;
  clients: number;
}

/**
 * `clients` connections each INSERT one row with autocommit, back to back; the rate is the
 * commits completed in the measured window (after `warmMs`).
 */
export async function singleRowCommitRate(
  url: string,
  clients: number,
  warmMs: number,
  measureMs: number,
): Promise<CommitRate> {
  await withClient(url, (c) =>
    c.query(
      'CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, client int NOT NULL, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())',
    ),
  );
  const conns = await Promise.all(
    Array.from({ length: clients }, async () => {
      const c = benchClient(url);
      await c.connect();
      return c;
    }),
  );
  const start = performance.now();
  const windowStart = start + warmMs;
  const windowEnd = windowStart + measureMs;
  let done = 0;
  let busyMs = 0;
  try {
    await Promise.all(
      conns.map(async (c, k) => {
        for (;;) {
          const t = performance.now();
          if (t >= windowEnd) return;
          await c.query('INSERT INTO bench_commit (client, payload) VALUES ($1, $2)', [k, 'label 12345']);
          const end = performance.now();
          if (end > windowStart && end <= windowEnd) {
            done++;
            busyMs += end - t;
          }
        }
      }),
    );
  } finally {
    await Promise.all(conns.map((c) => c.end().catch(() => {})));
  }
  return { txPerSecond: (done * 1000) / measureMs, meanMs: done ? busyMs / done : Number.NaN, clients };
}

/** Counters of PostgreSQL background work that stalls commits: checkpoints (cluster-wide) and autovacuum of `miniapp_ops`. */
export interface PgActivity {
  checkpoints: number;
  autovacuums: number;
}

export function pgActivity(url: string): Promise<PgActivity> {
  return withClient(url, async (c) => {
    const cp = await c.query('SELECT checkpoints_timed + checkpoints_req AS n FROM pg_stat_bgwriter');
    const av = await c.query(
      "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) AS n FROM pg_stat_user_tables WHERE relname = 'miniapp_ops'",
    );
    return { checkpoints: Number(cp.rows[0].n), autovacuums: Number(av.rows[0].n) };
  });
}
