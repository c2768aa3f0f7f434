/**
 * The database for a command that is not the server (`vault rotate`, `integrations`):
 * DATABASE_URL, or the embedded default started under DATA_DIR's lock (so never under a running
 * server), migrated; `close` ends the pool and stops the embedded database.
 */
import type { Config } from '../config.ts';
import type { Logger } from '../observability/logger.ts';
import { startEmbeddedPostgres } from '../store/embeddedPostgres.ts';
import { migrate } from '../store/migrate.ts';
import { createPool, type Pool } from '../store/pool.ts';

export async function openToolDatabase(
  config: Readonly<Config>,
  log: Logger,
): Promise<{ pool: Pool; close: () => Promise<void> }> {
  const embedded = config.databaseUrl
    ? undefined
    : await startEmbeddedPostgres(config.dataDir, config.embeddedPgPort, log, 'migrate');
  const pool = createPool(config.databaseUrl ?? (embedded as { url: string }).url, config.pg, log);
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
  return { pool, close };
}
