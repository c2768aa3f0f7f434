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

export interface QueryOptions {
  /** Safe to run twice: retried once on a new connection after a connection error. */
  idempotent?: boolean;
}

/** Runs one statement; errors come back translated to the catalog (`db_unavailable`, …). */
export async function query<R extends pg.QueryResultRow = pg.QueryResultRow>(
  pool: Pool,
  text: string,
  values: unknown[] = [],
  options: QueryOptions = {},
): Promise<pg.QueryResult<R>> {
  try {
    return await pool.query<R>(text, values);
  } catch (err) {
    if (options.idempotent && isConnectionError(err)) {
      try {
        return await pool.query<R>(text, values);
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
