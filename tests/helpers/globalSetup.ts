/**
 * Finds PostgreSQL for the suite: TEST_DATABASE_URL or DATABASE_URL, else the local server
 * on 127.0.0.1:5432, else (a machine with only Node) an embedded PostgreSQL in a temporary
 * directory. Builds one migrated template database that every test file copies.
 */
import { mkdtemp, rm } from 'node:fs/promises';
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

export default async function setup(project: TestProject) {
  const log = pino({ level: 'warn' });
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
    tmp = await mkdtemp(path.join(os.tmpdir(), 'archety-test-pg-'));
    embedded = await startEmbeddedPostgres(tmp, 0, log);
    adminUrl = withDatabase(embedded.url, 'postgres');
  }
  const template = `archety_tpl_${process.pid}_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${template}`);
  const pool = new pg.Pool({ connectionString: withDatabase(adminUrl, template), max: 1 });
  await migrate(pool, log);
  await pool.end();
  project.provide('pgAdminUrl', adminUrl);
  project.provide('pgTemplate', template);

  return async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await embedded?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  };
}
