/**
 * `archety cluster`: a cluster on this machine for development and tests. It applies the
 * migrations once (so N starts do not queue on the migration lock), then runs N `archety start`
 * processes sharing DATABASE_URL and REDIS_URL, on consecutive ports, named node-1…node-N, with
 * every line they print prefixed by their name. A process that dies is reported and the others
 * keep running; the first stop signal stops them all gracefully, a second kills them.
 *
 * It is a command of the CLI rather than a script of its own so that it shares the flag parsing
 * and one-line errors of the others, is listed by `archety --help`, and works as
 * `npx archety cluster` wherever the package is installed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, redactValue } from '../config.ts';
import { collectorFlags } from '../observability/gcThreads.ts';
import { options } from './args.ts';
import { EXIT_MARGIN_MS } from './startCommand.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/archety.js');
const MAX_NODES = 32;
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
/** A repeat this soon is the same Ctrl-C delivered twice (by the terminal and by npm), as in `start`. */
const REPEAT_GRACE_MS = 500;
/** Beyond a node's own deadline (SHUTDOWN_TIMEOUT_MS + EXIT_MARGIN_MS) before it is killed. */
const KILL_MARGIN_MS = 2_000;
/** The summary line `archety start` logs once it listens (in either log format). */
const LISTENING = /archety listening on /;
/** How often a starting node's `/ready` is asked whether it listens. */
const POLL_MS = 100;

const HELP = `Usage: archety cluster [--nodes 3] [--port 8080]

Starts a local cluster: N \`archety start\` processes on this machine sharing one PostgreSQL
(DATABASE_URL) and one Redis (REDIS_URL), on consecutive ports from --port, named node-1…node-N
(NODE_ID). The migrations are applied once first. Every line a process prints is prefixed with
its name. Ctrl-C or SIGTERM stops them all gracefully; a second Ctrl-C kills them.

  --nodes <n>   how many processes, 1–${MAX_NODES} (default 3)
  --port <p>    node-1's port; node-i listens on p + i - 1 (default 8080)

Needs DATABASE_URL, REDIS_URL and JWT_SECRET (or JWT_JWKS_URL); every other variable
(REDIS_PREFIX, ACTOR_LEASE_MS, LOG_LEVEL, …) is passed to each process as it is. Example:
  DATABASE_URL=postgres://127.0.0.1:5432/archety REDIS_URL=redis://127.0.0.1:6379 \\
  JWT_SECRET=$(openssl rand -hex 32) npm run cluster -- --nodes 3
`;

/** A mistake in the command line: one line, exit code 2. */
class UsageError extends Error {}

interface ClusterOptions {
  nodes: number;
  port: number;
}

export async function runCluster(args: string[]): Promise<number> {
  let opts: ClusterOptions | 'help';
  try {
    opts = parseClusterArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`archety cluster: ${err.message} (archety cluster --help)\n`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  let env: ClusterEnvironment;
  try {
    env = clusterEnvironment(process.env, opts.port);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`archety cluster: ${err.message}\n`);
    return 1;
  }
  const supervisor = new Supervisor(env.deadlineMs);
  try {
    const last = opts.port + opts.nodes - 1;
    say(
      `archety cluster (pid ${process.pid}): ${opts.nodes} node${opts.nodes === 1 ? '' : 's'} on ports ${opts.port}–${last}, database ${redactValue('DATABASE_URL', env.vars.DATABASE_URL)}, redis ${redactValue('REDIS_URL', env.vars.REDIS_URL)} (prefix ${JSON.stringify(env.redisPrefix)})`,
    );
    const migrate = supervisor.track(runChild('migrate', ['migrate'], env.vars));
    const migrated = await migrate.exited;
    if (supervisor.stopping) return await supervisor.stopped;
    if (migrated.code !== 0) {
      process.stderr.write('archety cluster: the migrations failed (see above): no node started\n');
      return 1;
    }
    startNodes(opts, env, supervisor);
    return await supervisor.stopped;
  } finally {
    supervisor.dispose();
  }
}

/** The options, or 'help'; throws UsageError for anything else. */
function parseClusterArgs(args: string[]): ClusterOptions | 'help' {
  let o: ReturnType<typeof options>;
  try {
    o = options(args, { nodes: { type: 'string', default: '3' }, port: { type: 'string', default: '8080' } });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code !== 'string' || !code.startsWith('ERR_PARSE_ARGS')) throw err;
    const quoted = /'([^' ]+)/.exec((err as Error).message)?.[1];
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${quoted}`);
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unexpected argument ${quoted}`);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new UsageError(`${quoted} needs a value`);
    throw new UsageError((err as Error).message.split('\n')[0]);
  }
  if (o.help) return 'help';
  const nodes = wholeNumber('--nodes', String(o.nodes), 1, MAX_NODES);
  const port = wholeNumber('--port', String(o.port), 1, 65535 - nodes + 1);
  return { nodes, port };
}

function wholeNumber(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) {
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, not ${JSON.stringify(value)}`);
  }
  return n;
}

interface ClusterEnvironment {
  /** The environment every process gets (plus its NODE_ID and PORT). */
  vars: Record<string, string>;
  host: string;
  redisPrefix: string;
  /** How long after a stop signal the processes still running are killed. */
  deadlineMs: number;
}

/**
 * The environment every process gets, checked once here (one line for a mistake instead of one
 * per process). The launcher never starts the embedded PostgreSQL: each process would start its
 * own, and they would not be a cluster.
 */
function clusterEnvironment(env: NodeJS.ProcessEnv, port: number): ClusterEnvironment {
  const missing = ['DATABASE_URL', 'REDIS_URL'].filter((name) => !env[name]);
  if (!env.JWT_SECRET && !env.JWT_JWKS_URL) missing.push('JWT_SECRET');
  if (missing.length > 0) {
    throw new ConfigError(
      `needs ${missing.join(', ')} (its processes share one PostgreSQL and one Redis, and verify tokens with one secret), e.g. DATABASE_URL=postgres://127.0.0.1:5432/archety REDIS_URL=redis://127.0.0.1:6379 JWT_SECRET=$(openssl rand -hex 32) npm run cluster -- --nodes 3`,
    );
  }
  const vars = Object.fromEntries(
    Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
  const config = loadConfig({ ...vars, PORT: String(port), NODE_ID: 'node-1' });
  return {
    vars,
    host: config.host,
    redisPrefix: config.redisPrefix,
    deadlineMs: config.shutdownTimeoutMs + EXIT_MARGIN_MS + KILL_MARGIN_MS,
  };
}

function startNodes(opts: ClusterOptions, env: ClusterEnvironment, supervisor: Supervisor): void {
  const ids = Array.from({ length: opts.nodes }, (_, i) => `node-${i + 1}`);
  const width = Math.max(...ids.map((id) => id.length));
  let listening = 0;
  let ended = 0;
  ids.forEach((id, i) => {
    const port = opts.port + i;
    const url = nodeUrl(env.host, port);
    const node = supervisor.track(
      runChild(id.padEnd(width), ['start'], { ...env.vars, NODE_ID: id, PORT: String(port) }),
    );
    let listened = false;
    void answeringAs(url, id, () => supervisor.stopping || node.ended()).then((mode) => {
      if (mode === undefined) return;
      listened = true;
      say(`${id} listening on ${url} (pid ${node.child.pid}, mode ${mode})`);
      if (++listening === opts.nodes) {
        say(
          `archety cluster: ${listening} nodes listening; Ctrl-C stops them all. A token for them: npm run token -- --sub +15551234567`,
        );
      }
    });
    void node.exited.then(({ code, signal }) => {
      ended++;
      if (supervisor.stopping) return;
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const left = opts.nodes - ended;
      process.stderr.write(
        `${id} ${how}${listened ? '' : ' before listening'}${left > 0 ? `; the other ${left} keep running` : '; no node is left'}\n`,
      );
      if (left === 0) supervisor.finish(1);
    });
  });
}

/** Where the launcher reaches a node: its HOST, or the loopback when it listens on every address. */
function nodeUrl(host: string, port: number): string {
  const reach = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${reach.includes(':') ? `[${reach}]` : reach}:${port}`;
}

/**
 * The mode the node at `url` reports once its `/ready` answers as `id` (any status: it may be
 * waiting for a database), or undefined once `gaveUp()`. Asking, rather than reading the
 * node's log, works at any LOG_LEVEL and LOG_FORMAT, and never mistakes another program on
 * that port for the node.
 */
async function answeringAs(url: string, id: string, gaveUp: () => boolean): Promise<string | undefined> {
  while (!gaveUp()) {
    try {
      const res = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { node?: unknown; mode?: unknown };
      if (body.node === id) return String(body.mode);
    } catch {
      // Not listening yet.
    }
    await sleep(POLL_MS);
  }
  return undefined;
}

interface Child {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  ended(): boolean;
}

/**
 * Runs `archety <args>` with `prefix` before each line it prints, except the summary line of
 * `archety start`: the launcher prints its own line for each node instead.
 */
function runChild(prefix: string, args: string[], env: Record<string, string>): Child {
  // The nodes collect garbage as the launcher does (`node --single-threaded-gc bin/archety.js cluster`),
  // with its young generation (`npm run cluster` gives it --max-semi-space-size).
  const child = spawn(process.execPath, [...collectorFlags(), BIN, ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const onLine = (line: string, out: Writable) => {
    if (!LISTENING.test(line)) out.write(`${prefix} | ${line}\n`);
  };
  relayLines(child.stdout, process.stdout, onLine);
  relayLines(child.stderr, process.stderr, onLine);
  let ended = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    // Spawning itself failed (no node binary): it never runs, so it never exits.
    child.once('error', (err) => {
      process.stderr.write(`${prefix} | could not be started: ${err.message}\n`);
      resolve({ code: 1, signal: null });
    });
  }).finally(() => {
    ended = true;
  });
  return { child, exited, ended: () => ended };
}

function relayLines(from: Readable | null, to: Writable, onLine: (line: string, to: Writable) => void): void {
  if (from)
    readline.createInterface({ input: from, crlfDelay: Number.POSITIVE_INFINITY }).on('line', (l) => onLine(l, to));
}

const processes = (n: number) => (n === 1 ? '1 process' : `${n} processes`);

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/**
 * The processes of a run and their stop. The first stop signal sends SIGTERM to each (and
 * SIGCONT, so a stopped one can act on it) and waits: exit 0 when each stopped cleanly, 1 when
 * one failed or had to be killed at the deadline. Another signal kills them all at once: exit 1.
 */
class Supervisor {
  readonly stopped: Promise<number>;
  private readonly live = new Set<ChildProcess>();
  private first: { signal: NodeJS.Signals; at: number } | undefined;
  private unclean = false;
  private deadline: NodeJS.Timeout | undefined;
  private resolve!: (code: number) => void;

  constructor(private readonly deadlineMs: number) {
    this.stopped = new Promise((resolve) => {
      this.resolve = resolve;
    });
    for (const signal of STOP_SIGNALS) process.on(signal, this.onSignal);
  }

  get stopping(): boolean {
    return this.first !== undefined;
  }

  track(child: Child): Child {
    this.live.add(child.child);
    void child.exited.then(({ code, signal }) => {
      this.live.delete(child.child);
      // Killed by the stop signal before it could handle it (still loading): a clean stop too.
      if (this.stopping && code !== 0 && !(signal && STOP_SIGNALS.some((s) => s === signal))) this.unclean = true;
      if (this.stopping && this.live.size === 0) this.finish(this.unclean ? 1 : 0);
    });
    return child;
  }

  finish(code: number): void {
    clearTimeout(this.deadline);
    this.resolve(code);
  }

  dispose(): void {
    for (const signal of STOP_SIGNALS) process.off(signal, this.onSignal);
    clearTimeout(this.deadline);
  }

  private readonly onSignal = (signal: NodeJS.Signals): void => {
    if (this.first) {
      if (Date.now() - this.first.at < REPEAT_GRACE_MS) return;
      say(`archety cluster: ${signal} again: killing ${processes(this.live.size)}`);
      this.killAll();
      this.finish(1);
      return;
    }
    this.first = { signal, at: Date.now() };
    if (this.live.size === 0) {
      this.finish(0);
      return;
    }
    say(`archety cluster: ${signal}: stopping ${processes(this.live.size)}`);
    for (const child of this.live) {
      child.kill('SIGTERM');
      child.kill('SIGCONT');
    }
    this.deadline = setTimeout(() => {
      process.stderr.write(
        `archety cluster: ${processes(this.live.size)} still running ${this.deadlineMs} ms after ${signal}: killing them\n`,
      );
      this.killAll();
      this.finish(1);
    }, this.deadlineMs);
  };

  private killAll(): void {
    for (const child of this.live) child.kill('SIGKILL');
  }
}
