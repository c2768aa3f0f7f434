/**
 * The database as the server and the commands that are not the server (`vault rotate`,
 * `integrations`) open it: DATABASE_URL, or the embedded default started under DATA_DIR's lock
 * (`owner` names who holds it, so a command never runs beside a running server), a pool on
 * it, migrations applied. `close` ends the pool and stops the embedded database.
 */
import type { Config } from '../config.ts';
import type { Logger } from '../observability/logger.ts';
import type { LockOwner } from './dataDirLock.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './embeddedPostgres.ts';
import { migrate } from './migrate.ts';
import { createPool, type Pool } from './pool.ts';

export interface OpenDatabase {
  pool: Pool;
  embedded: EmbeddedPostgres | undefined;
  databaseUrl: string;
  close: () => Promise<void>;
}

export async function openDatabase(
  config: Readonly<Config>,
  log: Logger,
  owner: LockOwner = 'server',
): Promise<OpenDatabase> {
  const embedded: EmbeddedPostgres | undefined = config.databaseUrl
    ? undefined
    : await startEmbeddedPostgres(config.dataDir, config.embeddedPgPort, log, owner);
  const databaseUrl = config.databaseUrl ?? (embedded as EmbeddedPostgres).url;
  const pool = createPool(databaseUrl, config.pg, log);
  const close = async () => {
    await pool.end();
    await embedded?.stop();
  };
  try {
    await migrate(pool, log);
  } catch (err) {
    await close();
    throw err;
  }
  return { pool, embedded, databaseUrl, close };
}
