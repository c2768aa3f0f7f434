/**
 * Forward-only migrations: `sql/NNN_name.sql`, applied in order in one transaction
 * (all or none) and recorded in `schema_migrations`. An advisory lock lets several processes
 * start at once against one database.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../observability/logger.ts';
import { type Pool, transaction } from './pool.ts';

export const sqlDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../sql');

/** Arbitrary constant naming the migration lock. */
const MIGRATION_LOCK = 7_241_926_001;

export interface Migration {
  version: number;
  name: string;
  file: string;
}

export async function listMigrations(dir = sqlDir): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort();
  return files.map((file) => ({
    version: Number(file.slice(0, 3)),
    name: file.slice(4, -4),
    file: path.join(dir, file),
  }));
}

/** Applies the migrations not yet recorded; returns the names applied. */
export async function migrate(pool: Pool, log: Logger, dir = sqlDir): Promise<string[]> {
  const applied: string[] = [];
  await transaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    // Building an index on a large table may take longer than the pool's statement timeout.
    await client.query('SET LOCAL statement_timeout = 0');
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set(
      (await client.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version),
    );
    for (const m of await listMigrations(dir)) {
      if (done.has(m.version)) continue;
      const sql = await readFile(m.file, 'utf8');
      await client.query(sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      log.info({ migration: `${String(m.version).padStart(3, '0')}_${m.name}` }, 'migration applied');
      applied.push(m.name);
    }
  });
  return applied;
}
