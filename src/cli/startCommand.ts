/**
 * `archety start`: runs the server until SIGTERM or SIGINT, then shuts down gracefully.
 * A database it cannot use is one line on stderr naming what is wrong and the fix; with the
 * embedded default, the data directory's lock records the port (for the message a second
 * start on the same directory prints) and goes with the process.
 */
import v8 from 'node:v8';
import { loadConfig } from '../config.ts';
import { type RunningServer, startServer } from '../server.ts';
import { recordServerPort } from '../store/dataDirLock.ts';
import { explainDatabaseError } from '../store/explainDatabaseError.ts';
import { options } from './args.ts';
import { nextSteps } from './nextSteps.ts';

/** Hard deadline for a graceful shutdown (PROTOCOL: exit within 10 s). */
const EXIT_DEADLINE_MS = 10_000;

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
  let server: RunningServer;
  try {
    server = await startServer(config);
  } catch (err) {
    const line = config.databaseUrl ? explainDatabaseError(err, config.databaseUrl) : undefined;
    if (line === undefined) throw err;
    process.stderr.write(`archety: ${line}\n`);
    return 1;
  }
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
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.log.info({ signal }, 'shutting down');
    const deadline = setTimeout(() => {
      server.log.error('shutdown took too long; exiting');
      process.exit(1);
    }, EXIT_DEADLINE_MS);
    deadline.unref();
    server.close().then(
      () => process.exit(0),
      (err) => {
        server.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return -1;
}
