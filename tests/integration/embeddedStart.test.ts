/**
 * The first-run path: `npm start` with nothing but Node — no DATABASE_URL, no JWT_SECRET —
 * starts an embedded PostgreSQL under DATA_DIR, prints one summary line and serves; `archety
 * token` mints tokens for the generated secret; SIGTERM stops both cleanly.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { listMigrations } from '../../src/store/migrate.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { withDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { repoRoot } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';

const run = promisify(execFile);

describe('the embedded default', () => {
  it('starts with `npm start` and no DATABASE_URL, serves, mints tokens, and stops on SIGTERM', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'archety-embedded-'));
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      DATA_DIR: dataDir,
      PORT: '0',
      LOG_FORMAT: 'json',
    };
    const child = spawn('npm', ['start', '--silent'], {
      cwd: repoRoot,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    onCleanup(async () => {
      try {
        // npm and the server it started share a process group; whatever of it is still alive.
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // the whole group has exited
      }
      await rm(dataDir, { recursive: true, force: true });
    });
    let out = '';
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no summary line:\n${out}`)), 45_000);
      const read = (chunk: Buffer) => {
        out += chunk.toString();
        const m = /archety listening on (http:\/\/[^ ]+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      };
      child.stdout.on('data', read);
      child.stderr.on('data', read);
    });
    const summary = out.split('\n').find((l) => l.includes('archety listening on')) as string;
    expect(JSON.parse(summary)).toMatchObject({
      mode: 'single',
      url,
      database: 'embedded',
      dataDir: path.join(dataDir, 'pg'),
    });

    expect((await api(url, 'GET', '/ready')).status).toBe(200);
    const { stdout } = await run(
      process.execPath,
      [path.join(repoRoot, 'bin/archety.js'), 'token', '--sub', '+15557770001'],
      { env, cwd: repoRoot },
    );
    const token = stdout.trim();
    expect(token.split('.')).toHaveLength(3);
    const id = await createTrip(url, token);
    const s = await openSocket(url, id, token);
    expect((await s.next('snapshot')).state).toMatchObject({ title: 'Lisbon' });
    s.close();

    // Like Ctrl+C in a terminal: the signal reaches npm and the server; npm itself dies of
    // it, so the server's own clean exit is read from its last log line.
    process.kill(-(child.pid as number), 'SIGTERM');
    await exited;
    await expect.poll(() => out, { timeout: 10_000 }).toContain('shutdown complete');
    // PostgreSQL stopped with us: its pid file is gone.
    await expect(run('test', ['!', '-e', path.join(dataDir, 'pg', 'postmaster.pid')])).resolves.toBeDefined();
  }, 90_000);
});

describe('the archety command', () => {
  const cli = (args: string[], env: Record<string, string> = {}) =>
    run(process.execPath, [path.join(repoRoot, 'bin/archety.js'), ...args], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '', ...env },
    });

  it('lists every command in --help', async () => {
    const { stdout } = await cli(['--help']);
    for (const command of ['start', 'migrate', 'token']) expect(stdout).toContain(command);
  });

  it('mints a token with the requested claims and lifetime', async () => {
    const env = { JWT_SECRET: 'a-secret-that-is-long-enough-for-hs256!', DATABASE_URL: 'postgres://x@127.0.0.1/none' };
    const { stdout } = await cli(
      ['token', '--sub', '+15551234567', '--sid', 'ms_1', '--ttl', '2h', '--role', 'user'],
      env,
    );
    const claims = JSON.parse(Buffer.from(stdout.trim().split('.')[1], 'base64url').toString());
    expect(claims).toMatchObject({ sub: '+15551234567', sid: 'ms_1', role: 'user', iss: 'archety', aud: 'archety' });
    expect(claims.exp - claims.iat).toBe(7200);
  });

  it('applies the migrations with `archety migrate` and is a no-op the second time', async () => {
    const admin = new pg.Client({ connectionString: inject('pgAdminUrl') });
    await admin.connect();
    const name = `archety_migrate_${process.pid}_${Date.now().toString(36)}`;
    await admin.query(`CREATE DATABASE ${name}`);
    try {
      const url = withDatabase(inject('pgAdminUrl'), name);
      const env = { DATABASE_URL: url, JWT_SECRET: 'a-secret-that-is-long-enough-for-hs256!', LOG_FORMAT: 'json' };
      const first = await cli(['migrate'], env);
      expect(first.stdout).toContain('001_schema');
      const second = await cli(['migrate'], env);
      expect(second.stdout).toContain('up to date');
      const db = new pg.Client({ connectionString: url });
      await db.connect();
      const { rows } = await db.query('SELECT version FROM schema_migrations ORDER BY version');
      await db.end();
      expect(rows.map((r) => r.version)).toEqual((await listMigrations()).map((m) => m.version));
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  });

  it('fails with one clear line naming an invalid variable', async () => {
    const err = await cli(['start'], { PORT: 'eighty' }).catch((e) => e);
    expect(err.code).toBe(1);
    expect(err.stderr.trim().split('\n')).toHaveLength(1);
    expect(err.stderr).toContain('PORT');
  });

  it('refuses an unknown command or option with a usage message', async () => {
    const err = await cli(['dance']).catch((e) => e);
    expect(err.code).toBe(2);
    expect(err.stderr).toContain('unknown command');
    const bad = await cli(['token', '--sub', '+1', '--bogus']).catch((e) => e);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('bogus');
  });
});
