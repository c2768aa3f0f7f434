/**
 * Finds PostgreSQL for the suite: TEST_DATABASE_URL or DATABASE_URL, else the local server
 * on 127.0.0.1:5432, else (a machine with only Node) an embedded PostgreSQL in a temporary
 * directory. Builds one migrated template database that every test file copies.
 *
 * Everything a run creates is named after the run: its databases start with
 * `archety_t_<run>_`, and its files go under a temporary directory of its own (TMPDIR for
 * the test processes and what they start). At the end, anything of the run still there is
 * removed and the run fails, naming it: the test files clean up after themselves.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import type { TestProject } from 'vitest/node';
import { type EmbeddedPostgres, startEmbeddedPostgres } from '../../src/store/embeddedPostgres.ts';
import { migrate } from '../../src/store/migrate.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
    pgTemplate: string;
    /** Every test database of this run is named with this prefix. */
    testDatabasePrefix: string;
  }
}

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Files a run may leave in its temporary directory: tsx's compile cache. */
const CACHES = /^tsx-\d+$/;

export default async function setup(project: TestProject) {
  const log = pino({ level: 'warn' });
  const runTag = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  // Each project of vitest.config.ts runs this setup in the same process, before any test, and
  // its teardown after every test: the projects share one folder. Its name stays short, as
  // Chromium refuses a profile whose socket path passes 107 bytes.
  process.env.ARCHETY_TEST_OUTER_TMP ??= os.tmpdir();
  const outerTmp = process.env.ARCHETY_TEST_OUTER_TMP;
  const runTmp = process.env.ARCHETY_TEST_TMP ?? (await mkdtemp(path.join(outerTmp, 'archety-t-')));
  process.env.ARCHETY_TEST_TMP = runTmp;
  // Like /tmp: the embedded PostgreSQL runs as another user (postgres) when the tests run as root.
  await chmod(runTmp, 0o1777);
  // Test workers are started after global setup and inherit this environment.
  process.env.TMPDIR = runTmp;
  let embedded: EmbeddedPostgres | undefined;
  let tmp: string | undefined;
  let adminUrl =
    process.env.TEST_DATABASE_URL ??
    process.env.DATABASE_URL ??
    `postgres://${encodeURIComponent(os.userInfo().username)}@127.0.0.1:5432/postgres`;
  if (!(await reachable(adminUrl))) {
    console.warn(
      `[tests] PostgreSQL at ${adminUrl.replace(/:[^:@/]*@/, ':***@')} is not reachable: starting an embedded one`,
    );
    tmp = await mkdtemp(path.join(outerTmp, 'archety-test-pg-'));
    embedded = await startEmbeddedPostgres(tmp, 0, log);
    adminUrl = withDatabase(embedded.url, 'postgres');
  }
  const template = `archety_tpl_${runTag}`;
  const prefix = `archety_t_${runTag}_`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${template}`);
  const pool = new pg.Pool({ connectionString: withDatabase(adminUrl, template), max: 1 });
  await migrate(pool, log);
  await pool.end();
  project.provide('pgAdminUrl', adminUrl);
  project.provide('pgTemplate', template);
  project.provide('testDatabasePrefix', prefix);

  return async () => {
    const leftovers: string[] = [];
    const { rows } = await admin.query<{ datname: string }>(
      'SELECT datname FROM pg_database WHERE starts_with(datname, $1)',
      [prefix],
    );
    for (const { datname } of rows) {
      leftovers.push(`database ${datname}`);
      await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`).catch(() => {});
    }
    await admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await embedded?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
    // The first project's teardown checks and removes the shared folder.
    const entries = await readdir(runTmp).catch(() => []);
    for (const entry of entries) if (!CACHES.test(entry)) leftovers.push(`${runTmp}/${entry}`);
    await rm(runTmp, { recursive: true, force: true });
    if (leftovers.length > 0) {
      // vitest reports an error thrown here but still exits 0: fail the run explicitly.
      process.exitCode = 1;
      throw new Error(
        `the run left behind (now removed; a test file must clean up what it creates):\n  ${leftovers.join('\n  ')}`,
      );
    }
  };
}
