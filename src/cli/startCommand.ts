/**
 * `archety start`: runs the server until SIGTERM, SIGINT or SIGHUP, then shuts down
 * gracefully, within a deadline derived from SHUTDOWN_TIMEOUT_MS. A start that fails for a
 * reason a person can fix (a database it cannot use, a port it cannot listen on) is one line
 * on stderr naming what is wrong and the fix; with the embedded default, the data
 * directory's lock records the port (for the message a second start on the same directory
 * prints) and goes with the process.
 */
import net from 'node:net';
import v8 from 'node:v8';
import { type Config, loadConfig } from '../config.ts';
import { type RunningServer, startServer } from '../server.ts';
import { recordServerPort } from '../store/dataDirLock.ts';
import { explainDatabaseError } from '../store/explainDatabaseError.ts';
import { options } from './args.ts';
import { nextSteps } from './nextSteps.ts';

/**
 * What a shutdown may take beyond SHUTDOWN_TIMEOUT_MS (the wait for actors to save): closing
 * the sockets, the last group commit, ending the pool, stopping the embedded PostgreSQL.
 */
export const EXIT_MARGIN_MS = 5_000;

/** The signals that stop the server gracefully; SIGHUP is the terminal it ran in closing. */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * A repeat this soon after the first signal is the same stop delivered twice (a terminal's
 * Ctrl+C reaches both npm and the server, and npm forwards it), not a person insisting.
 */
const REPEAT_GRACE_MS = 500;

export async function runStart(args: string[]): Promise<number> {
  if (options(args, {}).help) {
    process.stdout.write(
      'Usage: archety start\n\nStarts the server; configuration comes from the environment (see the README).\n',
    );
    return 0;
  }
  // V8 moves allocation sites whose objects mostly survive to the old generation. The ops a
  // session keeps in memory (its last 256) survive, so the sites they share with the
  // short-lived objects of every message (frame parsing, state copies) were pretenured, and
  // the old generation filled at tens of MB/s: full collections every few seconds, 100–250 ms
  // stalls and a p99 in the hundreds of ms (bench/README.md). V8 consults the flag when a GC
  // weighs its pretenuring feedback, so setting it here, before the server starts, takes effect.
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
  const config = loadConfig();
  // Before the server starts: it answers /health as soon as it listens, and a signal that
  // found no handler would kill the process outright, leaving its data directory locked.
  const stop = stopOnSignals(config.shutdownTimeoutMs + EXIT_MARGIN_MS);
  let server: RunningServer;
  try {
    server = await startServer(config);
  } catch (err) {
    const line = await explainStartError(err, config);
    if (line === undefined) throw err;
    process.stderr.write(`archety: ${line}\n`);
    return 1;
  }
  stop.serve(server);
  if (!config.databaseUrl) {
    await recordServerPort(config.dataDir, server.port);
    if (process.stdout.isTTY && config.logFormat === 'pretty' && !config.jwt.jwksUrl) {
      // After the summary line: the pretty logger writes from a worker thread.
      await new Promise<void>((resolve) => server.log.flush(() => resolve()));
      process.stdout.write(
        nextSteps({
          url: server.url,
          jwtSecretSet: Boolean(config.jwt.secret),
          dataDirEnv: process.env.DATA_DIR,
          viaNpm: process.env.npm_lifecycle_event === 'start',
        }),
      );
    }
  }
  return -1;
}

/**
 * On the first stop signal, closes the server and exits 0 (1 if closing failed); a signal
 * that arrives while the server is still starting closes it as soon as it has started. Exits 1
 * at once when the close has not finished `deadlineMs` after that signal, or on another signal.
 */
function stopOnSignals(deadlineMs: number): { serve(server: RunningServer): void } {
  let server: RunningServer | undefined;
  let first: { signal: NodeJS.Signals; at: number } | undefined;
  const say = (level: 'info' | 'warn' | 'error', fields: object, line: string) => {
    if (server) server.log[level](fields, line);
    else process.stderr.write(`archety: ${line}\n`);
  };
  const close = (running: RunningServer) =>
    running.close().then(
      () => process.exit(0),
      (err) => {
        running.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  const onSignal = (signal: NodeJS.Signals) => {
    if (first !== undefined) {
      if (Date.now() - first.at < REPEAT_GRACE_MS) return;
      say('warn', { signal }, `${signal} during the shutdown: exiting now, without finishing it`);
      process.exit(1);
    }
    first = { signal, at: Date.now() };
    say(
      'info',
      { signal, deadlineMs },
      server ? 'shutting down' : `${signal} while starting: shutting down once started`,
    );
    // Not unref'd: a close stuck on a promise nothing will settle must not end in a quiet exit 0.
    setTimeout(() => {
      say(
        'error',
        { deadlineMs },
        `shutdown not finished ${deadlineMs} ms after ${signal} (SHUTDOWN_TIMEOUT_MS + ${EXIT_MARGIN_MS}): exiting`,
      );
      process.exit(1);
    }, deadlineMs);
    if (server) close(server);
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  return {
    serve(running) {
      server = running;
      if (first) close(running);
    },
  };
}

/** One line explaining why the server could not start, or undefined (a bug keeps its stack). */
async function explainStartError(err: unknown, config: Readonly<Config>): Promise<string | undefined> {
  if (config.databaseUrl) {
    const line = explainDatabaseError(err, config.databaseUrl);
    if (line !== undefined) return line;
  }
  // The server's listen failure carries no reason (uWebSockets.js gives none): asking the
  // system for each address it binds finds the one that cannot be had, and why. METRICS_PORT
  // first: the server listens on PORT before it, so a PORT found taken after a METRICS_PORT
  // failure may be taken by this very process.
  const listeners = [{ host: config.host, port: config.port, variable: 'PORT' }];
  if (config.metrics)
    listeners.unshift({ host: config.metrics.host, port: config.metrics.port, variable: 'METRICS_PORT' });
  for (const { host, port, variable } of listeners) {
    const code = await bindError(host, port);
    if (code !== undefined) return explainBindError(code, host, port, variable);
  }
  return undefined;
}

/** The error code binding `host:port` fails with right now, or undefined if it can be bound. */
function bindError(host: string, port: number): Promise<string | undefined> {
  if (port === 0) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'EUNKNOWN'));
    probe.listen(port, host, () => probe.close(() => resolve(undefined)));
  });
}

function explainBindError(code: string, host: string, port: number, variable: string): string {
  const at = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (code === 'EADDRINUSE') {
    return `${at} is already in use (another archety, or another program, listens there): stop it, or set ${variable} to a free port${variable === 'PORT' ? ' (PORT=0 picks one)' : ''}`;
  }
  if (code === 'EACCES') {
    return `not allowed to listen on ${at} (ports below 1024 need privileges): set ${variable} to 1024 or above`;
  }
  if (code === 'EADDRNOTAVAIL') {
    const hostVariable = variable === 'PORT' ? 'HOST' : 'METRICS_HOST';
    return `cannot listen on ${at}: ${host} is not an address of this machine; fix ${hostVariable}`;
  }
  return `cannot listen on ${at} (${code}): check ${variable === 'PORT' ? 'HOST and PORT' : 'METRICS_HOST and METRICS_PORT'}`;
}
