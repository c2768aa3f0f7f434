/**
 * The process's one PostgreSQL pool, tuned from config: bounded size, a connect timeout so
 * an exhausted pool answers `db_unavailable` quickly, keepalive and a maximum lifetime so
 * dead or stale connections are replaced, and a statement timeout on every connection, and
 * an idle-in-transaction timeout (a paused process must not hold row locks until it wakes).
 */
import pg from 'pg';
import type { Config } from '../config.ts';
import type { Logger } from '../observability/logger.ts';
import { isConnectionError, translatePgError } from './translatePgError.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

/**
 * A connection that drops its prepared statements' cached plans (`DISCARD PLANS`, the
 * statements stay prepared) before the first prepared statement run `refreshMs` or more after
 * the last time. PostgreSQL settles a prepared statement on one generic plan after five runs and
 * keeps it until the tables it reads are analyzed again: a plan made while a table was nearly
 * empty (a new deployment, a test) would otherwise scan it sequentially once it holds millions
 * of rows wherever autovacuum is off. The drop costs one round trip a minute; an error of it
 * (inside a failed transaction) is the next statement's to report.
 */
function refreshingClient(refreshMs: number): typeof pg.Client {
  return class extends pg.Client {
    #plansAt = performance.now();

    // biome-ignore lint/suspicious/noExplicitAny: node-postgres's query overloads, passed on as they are.
    override query(...args: any[]): any {
      const config = args[0];
      if (typeof config === 'object' && config?.name && performance.now() - this.#plansAt >= refreshMs) {
        this.#plansAt = performance.now();
        super.query('DISCARD PLANS').catch(() => {});
      }
      // biome-ignore lint/suspicious/noExplicitAny: as above.
      return (super.query as (...a: any[]) => any)(...args);
    }
  };
}

/**
 * `pg.Pool` is pg-pool's pool (node-postgres re-exports it with its own `Client` bound), so this
 * is the pg-pool the design names: importing `pg-pool` itself would only add the `Client`
 * argument and lose the types that ship with `pg`.
 */
export function createPool(url: string, config: Config['pg'], log: Logger): Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: config.max,
    connectionTimeoutMillis: config.connectionTimeoutMillis,
    idleTimeoutMillis: config.idleTimeoutMillis,
    maxLifetimeSeconds: config.maxLifetimeSeconds,
    keepAlive: true,
    keepAliveInitialDelayMillis: config.keepAliveInitialDelayMillis,
    statement_timeout: config.statementTimeoutMs || undefined,
    Client: refreshingClient(config.planRefreshMs),
    idle_in_transaction_session_timeout: config.idleInTransactionTimeoutMs || undefined,
    application_name: config.applicationName,
  });
  // Without these listeners a connection's error (server restart, pg_terminate_backend)
  // arriving while no query runs on it would be an unhandled 'error' event and kill the
  // process: the pool's listener covers idle clients, ours checked-out ones (whose next
  // query then fails and is handled where it was made).
  pool.on('error', (err) => {
    log.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'idle database connection lost');
  });
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      log.debug({ err: { message: err.message, code: (err as { code?: string }).code } }, 'database connection lost');
    });
  });
  return pool;
}

/**
 * A statement each connection keeps prepared under `name`: node-postgres sends its text once per
 * connection, and PostgreSQL parses and analyzes it once and, after its first five runs, plans
 * it once (a generic plan) rather than at every run. For the statements run per message, op or
 * batch — parsing, analysis and planning were a quarter of PostgreSQL's time under relay load.
 * Never for text built at run time (one prepared statement per distinct text on every connection).
 */
export interface Prepared {
  readonly name: string;
  readonly text: string;
}

export const prepared = (name: string, text: string): Prepared => ({ name, text });

/** `statement` run with `values`, as node-postgres takes it (`client.query(run(…))`). */
export const run = (statement: Prepared, values: unknown[]): pg.QueryConfig => ({
  name: statement.name,
  text: statement.text,
  values,
});

export interface QueryOptions {
  /** Safe to run twice: retried once on a new connection after a connection error. */
  idempotent?: boolean;
}

/** Runs one statement; errors come back translated to the catalog (`db_unavailable`, …). */
export async function query<R extends pg.QueryResultRow = pg.QueryResultRow>(
  pool: Pool,
  statement: string | Prepared,
  values: unknown[] = [],
  options: QueryOptions = {},
): Promise<pg.QueryResult<R>> {
  const once = () =>
    typeof statement === 'string' ? pool.query<R>(statement, values) : pool.query<R>(run(statement, values));
  try {
    return await once();
  } catch (err) {
    if (options.idempotent && isConnectionError(err)) {
      try {
        return await once();
      } catch (again) {
        throw translatePgError(again);
      }
    }
    throw translatePgError(err);
  }
}

/** Runs `fn` in a transaction on one connection; a connection that failed is discarded. */
export async function transaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  let client: PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw translatePgError(err);
  }
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    client.release();
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release(isConnectionError(err) ? (err as Error) : undefined);
    throw translatePgError(err);
  }
}

export function poolStats(pool: Pool): { total: number; idle: number; waiting: number } {
  return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount };
}
