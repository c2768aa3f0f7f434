/**
 * `archety migrate`: applies the migrations and exits. A database it cannot use is one line
 * on stderr naming what is wrong and the fix; the embedded default's data directory is
 * locked meanwhile, so it never runs under (or stops the database of) a running server.
 */
import { loadConfig } from '../config.ts';
import { createLogger } from '../observability/logger.ts';
import { startEmbeddedPostgres } from '../store/embeddedPostgres.ts';
import { explainDatabaseError } from '../store/explainDatabaseError.ts';
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
    : await startEmbeddedPostgres(config.dataDir, config.embeddedPgPort, log, 'migrate');
  const pool = createPool(config.databaseUrl ?? (embedded as { url: string }).url, config.pg, log);
  try {
    const applied = await migrate(pool, log);
    log.info(
      { applied: applied.length },
      applied.length ? `applied ${applied.length} migrations` : 'the database is up to date',
    );
    return 0;
  } catch (err) {
    const line = config.databaseUrl ? explainDatabaseError(err, config.databaseUrl) : undefined;
    if (line === undefined) throw err;
    process.stderr.write(`archety: ${line}\n`);
    return 1;
  } finally {
    await pool.end();
    await embedded?.stop();
  }
}
