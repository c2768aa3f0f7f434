/**
 * Starts a real server for a test: in this process (`startTestServer`) or as a child process
 * running `bin/archety.js start` (`spawnServer`, for restarts, signals and the CLI path).
 * Both listen on a free port and are torn down after the file's tests.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { type RunningServer, startServer } from '../../src/server.ts';
import { onCleanup } from './cleanup.ts';
import { TEST_SECRET } from './tokens.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function baseEnv(databaseUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    JWT_SECRET: TEST_SECRET,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
    LOG_FORMAT: 'json',
    UPGRADES_PER_IP_PER_SECOND: '0',
    // Tests make many requests from 127.0.0.1; the per-address limits are tested on servers of their own.
    HTTP_REQUESTS_PER_IP_PER_SECOND: '0',
    BODIES_IN_FLIGHT_PER_IP: '0',
    ...extra,
  };
}

/** A server in this process logging at debug level into `lines` (one JSON line each). */
export async function startLoggedServer(
  databaseUrl: string,
  env: Record<string, string> = {},
): Promise<{ server: RunningServer; lines: string[] }> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const config = loadConfig(baseEnv(databaseUrl, { ...env, LOG_LEVEL: 'debug' }));
  const server = await startServer(config, {
    log: createLogger({ level: 'debug', format: 'json', destination: sink }),
  });
  onCleanup(() => server.close());
  return { server, lines };
}

/** A server in this process; closed after the file's tests unless closed before. */
export async function startTestServer(databaseUrl: string, env: Record<string, string> = {}): Promise<RunningServer> {
  const config = loadConfig(baseEnv(databaseUrl, env));
  const server = await startServer(config, {
    log: createLogger({ level: config.logLevel, format: 'json' }),
  });
  onCleanup(() => server.close());
  return server;
}

export interface SpawnedServer {
  url: string;
  child: ChildProcess;
  output: () => string;
  /** Resolves with the exit code (or signal) once the process has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Whether the process `pid` is still running (signal 0 probes without signalling). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Kills `child` (SIGKILL) and resolves once it has exited. */
export function killProcess(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/**
 * Server processes still running, killed when the test process exits even if the file's
 * cleanup never ran: a leaked server keeps its pool's PostgreSQL connections until
 * max_connections is reached for everyone.
 */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/**
 * Runs `archety start` (or `args`) in a child process, with `nodeFlags` for Node (null: the
 * file run as a command, with the flags of its `#!` line), through `wrapper` when given (e.g.
 * `['taskset', '-c', '0']`), and waits for its summary line.
 */
export async function spawnServer(
  env: Record<string, string>,
  args: string[] = ['start'],
  nodeFlags: string[] | null = [],
  wrapper: string[] = [],
): Promise<SpawnedServer> {
  const node = nodeFlags === null ? [] : [process.execPath, ...nodeFlags];
  const [file, ...argv] = [...wrapper, ...node, path.join(repoRoot, 'bin/archety.js'), ...args];
  const child = spawn(file, argv, {
    cwd: repoRoot,
    // The summary line the helper waits for is logged at info.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  running.add(child);
  onCleanup(() => killProcess(child));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 30_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /archety listening on (http:\/\/[^ ]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`server exited before listening:\n${out}`));
    });
  });
  return { url, child, output: () => out, exited };
}
