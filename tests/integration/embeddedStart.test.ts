/**
 * The first-run path: `npm start` with nothing but Node — no DATABASE_URL, no JWT_SECRET —
 * starts an embedded PostgreSQL under DATA_DIR, prints one summary line and serves; `archety
 * token` mints tokens for the generated secret; a second start on the same DATA_DIR is
 * refused and leaves the first server's database alone; SIGTERM stops both cleanly.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { listMigrations } from '../../src/store/migrate.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { withDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { processAlive, repoRoot, spawnServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';

const run = promisify(execFile);

describe('the embedded default', () => {
  it('starts with `npm start` and no DATABASE_URL, serves, mints tokens, refuses a second start, and stops on SIGTERM', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'archety-embedded-'));
    // A lock left by a server that was killed: its pid is dead, so the lock is taken over.
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((resolve) => dead.once('exit', resolve));
    const lockFile = path.join(dataDir, 'archety.lock');
    await writeFile(lockFile, JSON.stringify({ pid: dead.pid, owner: 'server', nonce: 'dead', since: '' }));
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
    // The embedded default keeps OAuth tokens under a vault key it generated, readable by its owner only.
    expect(JSON.parse(summary).integrations).toMatch(/^on \(keys from DATA_DIR/);
    expect((await stat(path.join(dataDir, 'vault-keys'))).mode & 0o777).toBe(0o600);

    expect((await api(url, 'GET', '/ready')).status).toBe(200);
    // From another directory: DATA_DIR names the server's secret.
    const { stdout } = await run(
      process.execPath,
      [path.join(repoRoot, 'bin/archety.js'), 'token', '--sub', '+15557770001'],
      { env, cwd: os.tmpdir() },
    );
    const token = stdout.trim();
    expect(token.split('.')).toHaveLength(3);
    const id = await createTrip(url, token);
    const s = await openSocket(url, id, token);
    expect((await s.next('snapshot')).state).toMatchObject({ title: 'Lisbon' });
    s.close();

    // A second start on the same DATA_DIR: one line naming the first server, whose database
    // keeps working.
    const second = await run(process.execPath, [path.join(repoRoot, 'bin/archety.js'), 'start'], {
      env,
      cwd: repoRoot,
    }).catch((e) => e);
    expect(second.code).toBe(1);
    const port = new URL(url).port;
    expect(second.stderr).toMatch(
      new RegExp(
        `^archety: ${dataDir} is in use by the server running as pid (\\d+) on port ${port}; stop it first or set DATA_DIR\n$`,
      ),
    );
    const holder = JSON.parse(await readFile(lockFile, 'utf8'));
    expect(second.stderr).toContain(`pid ${holder.pid} `);
    expect(holder.pid).not.toBe(dead.pid);
    const porto = await createTrip(url, token, { title: 'Porto' });
    expect((await api(url, 'GET', `/v1/miniapps/${porto}`, { token })).status).toBe(200);

    // Like Ctrl+C in a terminal: the signal reaches npm and the server; npm itself dies of
    // it, so the server's own clean exit is read from its last log line.
    process.kill(-(child.pid as number), 'SIGTERM');
    await exited;
    await expect.poll(() => out, { timeout: 10_000 }).toContain('shutdown complete');
    // PostgreSQL stopped with us: its pid file is gone.
    await expect(run('test', ['!', '-e', path.join(dataDir, 'pg', 'postmaster.pid')])).resolves.toBeDefined();
    // And the data directory is free again.
    await expect(readFile(lockFile)).rejects.toMatchObject({ code: 'ENOENT' });
  }, 90_000);
});

describe('a server killed with SIGKILL', () => {
  it('leaves its lock and its PostgreSQL, and the next start takes over both', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'archety-killed-'));
    const pidFile = path.join(dataDir, 'pg', 'postmaster.pid');
    onCleanup(async () => {
      // Whatever PostgreSQL a failed run left behind.
      const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).split('\n')[0]);
      if (pid > 0 && processAlive(pid)) process.kill(pid, 'SIGINT');
      for (let i = 0; i < 100 && pid > 0 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
      await rm(dataDir, { recursive: true, force: true });
    });
    const env = { DATA_DIR: dataDir, PORT: '0', LOG_FORMAT: 'json' };
    const first = await spawnServer(env);
    const { stdout } = await run(
      process.execPath,
      [path.join(repoRoot, 'bin/archety.js'), 'token', '--sub', '+15557770002'],
      {
        env: { PATH: process.env.PATH ?? '', ...env },
      },
    );
    const token = stdout.trim();
    const id = await createTrip(first.url, token);
    const postgres = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
    first.child.kill('SIGKILL');
    await first.exited;
    expect(processAlive(postgres)).toBe(true);

    const second = await spawnServer(env);
    expect(second.output()).toContain('stopping an embedded PostgreSQL left running by an earlier process');
    expect(processAlive(postgres)).toBe(false);
    expect(JSON.parse(await readFile(path.join(dataDir, 'archety.lock'), 'utf8')).pid).toBe(second.child.pid);
    expect((await api(second.url, 'GET', `/v1/miniapps/${id}`, { token })).status).toBe(200);
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
    await expect(readFile(path.join(dataDir, 'archety.lock'))).rejects.toMatchObject({ code: 'ENOENT' });
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
