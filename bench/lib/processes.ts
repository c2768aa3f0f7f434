/**
 * The benchmark's child processes: the Archety server and the raw relay (pinned to core 0),
 * and the load-generator workers (pinned to core 1, coordinated over IPC).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SEMI_SPACE_MIB } from '../../src/observability/gcThreads.ts';
import { fileLimit, pinnedCommand } from './machine.ts';
import type { WorkerReply, WorkerRequest } from './protocol.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface ServerProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  /** Output so far (stdout and stderr). */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * The Node flags every Node server a benchmark starts gets — Archety, the raw relay, the peers,
 * the cluster's nodes alike, so none is measured with a setting the others lack: the young
 * generation Archety is started with (`--max-semi-space-size=32`, docs/operations.md "Young
 * generation"; `BENCH_SEMI_SPACE_MIB=16` gives V8's default, to measure what it does), and, on a
 * server pinned to one core, `--single-threaded-gc` ("On one core": V8's background GC threads
 * would only take that core from the event loop; `BENCH_GC_THREADS=background` leaves them on).
 */
export function serverNodeFlags(core: number | null): string[] {
  return [
    ...(core !== null && !backgroundGc() ? ['--single-threaded-gc'] : []),
    `--max-semi-space-size=${semiSpace()}`,
  ];
}

const backgroundGc = () => process.env.BENCH_GC_THREADS === 'background';
function semiSpace(): number {
  const raw = process.env.BENCH_SEMI_SPACE_MIB;
  if (raw === undefined) return SEMI_SPACE_MIB;
  const mib = Number(raw);
  if (!Number.isInteger(mib) || mib < 1)
    throw new Error(`BENCH_SEMI_SPACE_MIB must be an integer ≥ 1 (MiB), got "${raw}"`);
  return mib;
}

/** How the pinned servers are started, for a benchmark's machine line (said only when it pins). */
export function oneCoreNote(): string {
  const gc = backgroundGc() ? "V8's background GC threads (BENCH_GC_THREADS=background)" : '--single-threaded-gc';
  return `; pinned Node servers run with ${gc} and --max-semi-space-size=${semiSpace()}`;
}

/**
 * Starts `command` (pinned to `core` unless null, with `fileLimit` open files; a Node command
 * gets `serverNodeFlags`) and waits for the line matching `ready` (its first
 * group is the URL).
 */
export function startServerProcess(o: {
  name: string;
  command: string[];
  env: Record<string, string>;
  core: number | null;
  fileLimit: number;
  ready: RegExp;
  timeoutMs: number;
  /** Also write its output to this file. */
  logFile?: string;
}): Promise<ServerProcess> {
  const [program, ...rest] = o.command;
  // A flag the command gives itself (e.g. `--server-node-flags=--max-semi-space-size=64`) wins.
  const given = (flag: string) => rest.some((r) => r.split('=')[0] === flag.split('=')[0]);
  const flags = program === process.execPath ? serverNodeFlags(o.core).filter((f) => !given(f)) : [];
  const { file, args } = pinnedCommand(o.core, o.fileLimit, [program, ...flags, ...rest]);
  const child = spawn(file, args, { cwd: repoRoot, env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  if (o.logFile) {
    const file = createWriteStream(o.logFile);
    child.stdout?.pipe(file);
    child.stderr?.pipe(file);
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (graceMs = 12_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop(0);
      reject(new Error(`${o.name} did not start within ${o.timeoutMs} ms:\n${out.slice(-2000)}`));
    }, o.timeoutMs);
    let ready = false;
    const onData = (chunk: Buffer) => {
      // Keep the start of the output and its recent tail, not every line of a long run.
      out = out.length > 200_000 ? out.slice(0, 50_000) + out.slice(-100_000) : out;
      out += chunk.toString();
      // Once ready, the output is only kept: scanning it again on every chunk cost this
      // process (on the load generators' core) a regex over up to 200 KB per chunk.
      if (ready) return;
      const m = o.ready.exec(out);
      if (m) {
        ready = true;
        clearTimeout(timer);
        // bash execs taskset, which execs node: the child's pid is the server's.
        resolve({ url: m[1], pid: child.pid as number, child, output: () => out, stop });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${o.name} exited (${code ?? signal}) before it was ready:\n${out.slice(-2000)}`));
    });
  });
}

/** One load-generator process and its pending requests (`Req`: the requests its script understands). */
export class Worker<Req extends { cmd: string } = WorkerRequest> {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly exited: Promise<void>;

  constructor(
    readonly index: number,
    readonly child: ChildProcess,
  ) {
    child.on('message', (msg: WorkerReply) => {
      if ('progress' in msg) return;
      const w = this.waiting.get(msg.id);
      if (!w) return;
      this.waiting.delete(msg.id);
      if (msg.ok) w.resolve(msg.result);
      else w.reject(new Error(`worker ${index}: ${msg.error}`));
    });
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        for (const w of this.waiting.values()) w.reject(new Error(`worker ${index} exited (${code ?? signal})`));
        this.waiting.clear();
        resolve();
      }),
    );
  }

  get pid(): number {
    return this.child.pid as number;
  }

  request<T>(req: DistributiveOmit<Req, 'id'>, timeoutMs: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`worker ${this.index}: no answer to ${req.cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ ...req, id });
    });
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * Starts `count` load generators on `core` with a small young generation (BENCHMARKING.md),
 * each running `script` (relative to the repository root).
 */
export function startWorkers<Req extends { cmd: string } = WorkerRequest>(
  count: number,
  core: number | null,
  fileLimit: number,
  nodeFlags: string[] = [],
  script = 'bench/loadWorker.ts',
): Worker<Req>[] {
  return Array.from({ length: count }, (_, i) => {
    const { file, args } = pinnedCommand(core, fileLimit, [
      process.execPath,
      '--max-semi-space-size=8',
      '--initial-old-space-size=256',
      ...nodeFlags,
      '--import',
      'tsx',
      path.join(repoRoot, script),
    ]);
    const child = spawn(file, args, { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new Worker<Req>(i, child);
  });
}

/**
 * The miniapp benchmarks' server settings (bench:miniapp, bench:peers, bench:cluster): info
 * logs for its "archety listening on" line (nothing on the op path logs at info), JSON; no
 * per-address budget (the load comes from one address) and no cap on sockets per user (each
 * load user holds a socket in many sessions) or on ops per socket; no passivation mid-run.
 */
export const MINIAPP_BENCH_SERVER_ENV = {
  LOG_LEVEL: 'info',
  LOG_FORMAT: 'json',
  UPGRADES_PER_IP_PER_SECOND: '0',
  HTTP_REQUESTS_PER_IP_PER_SECOND: '0',
  BODIES_IN_FLIGHT_PER_IP: '0',
  MAX_SOCKETS_PER_USER: '0',
  MAX_OPS_PER_SECOND: '1000000',
  ACTOR_IDLE_MS: String(60 * 60_000),
};

/**
 * Starts an Archety server for the relay benchmarks (bench:relay, bench:relay:ab): `program`
 * (its `bin/archety.js`, after any Node flags) with `start`, on `databaseUrl`, signing with
 * `secret`, on a free port. Info logs for its "archety listening on" line, JSON; the relay's
 * and the senders' rate limits and the per-address budget lifted (every event comes from one
 * relay token and one address); no passivation mid-run; then `BENCH_SERVER_ENV` ('K=V K=V',
 * e.g. 'GROUP_COMMIT_LANES=2') to try settings.
 */
export function startRelayBenchServer(o: {
  program: string[];
  databaseUrl: string;
  secret: string;
  core: number | null;
  logFile?: string;
}): Promise<ServerProcess> {
  return startServerProcess({
    name: 'archety',
    command: [process.execPath, ...o.program, 'start'],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      DATABASE_URL: o.databaseUrl,
      JWT_SECRET: o.secret,
      PORT: '0',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      RELAY_EVENTS_PER_SECOND: '10000000',
      RELAY_EVENTS_BURST: '10000000',
      HTTP_REQUESTS_PER_IP_PER_SECOND: '0',
      BODIES_IN_FLIGHT_PER_IP: '0',
      SENDER_MESSAGES_PER_MINUTE: '10000000',
      SENDER_BURST: '10000000',
      ACTOR_IDLE_MS: '600000',
      ...Object.fromEntries(
        (process.env.BENCH_SERVER_ENV ?? '')
          .split(' ')
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      ),
    },
    core: o.core,
    fileLimit: fileLimit().granted,
    ready: /archety listening on (http:\/\/[^ ]+)/,
    timeoutMs: 60_000,
    ...(o.logFile ? { logFile: o.logFile } : {}),
  });
}
