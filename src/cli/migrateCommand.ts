/** `archety migrate`: applies the migrations and exits. */
import { loadConfig } from '../config.ts';
import { createLogger } from '../observability/logger.ts';
import { startEmbeddedPostgres } from '../store/embeddedPostgres.ts';
import { migrate } from '../store/migrate.ts';
import { createPool } from '../store/pool.ts';
import { options } from './args.ts';

export async function runMigrate(args: string[]): Promise<number> {
  if (options(args, {}).help) {
    process.stdout.write(
      'Usage: archety migrate\n\nApplies the migrations in sql/ to DATABASE_URL (or the embedded database) and exits.\n',
    );
    return 0;
  }
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  const embedded = config.databaseUrl
    ? undefined
    : await startEmbeddedPostgres(config.dataDir, config.embeddedPgPort, log);
  const pool = createPool(config.databaseUrl ?? (embedded as { url: string }).url, config.pg, log);
  try {
    const applied = await migrate(pool, log);
    log.info(
      { applied: applied.length },
      applied.length ? `applied ${applied.length} migrations` : 'the database is up to date',
    );
    return 0;
  } finally {
    await pool.end();
    await embedded?.stop();
  }
}
