/**
 * The processes of the benchmark's cluster: real `archety start` processes sharing one
 * PostgreSQL database and one Redis under the run's own prefix, each with its own NODE_ID, on
 * a port the kernel picks (a restarted process gets a new one; the benchmark's clients look it
 * up again). Each knows its process id (`src/cluster/processId.ts`, random at every start), so
 * the owner a lease names maps to a pid to kill.
 *
 * The process id is not published by the server: it is read from the lease the process takes
 * on a session of its own, created and read through it (nobody else knows that session, so the
 * lease can only be its).
 */
import path from 'node:path';
import type { RedisProbe } from './clusterRedis.ts';
import { type ServerProcess, startServerProcess } from './processes.ts';

export interface NodeSettings {
  /** Environment shared by every process (DATABASE_URL, REDIS_URL, REDIS_PREFIX, JWT_SECRET, …). */
  env: Record<string, string>;
  core: number | null;
  fileLimit: number;
  /** Token of a user that may create sessions (for the process-id probe). */
  token: string;
  redis: RedisProbe;
  logDir?: string;
}

export class BenchNode {
  private server: ServerProcess | undefined;
  private starts = 0;
  /** This run's process id (changes at every start). */
  processId = '';

  constructor(
    /** 1-based, as NODE_ID `node-<n>`. */
    readonly n: number,
    private readonly settings: NodeSettings,
  ) {}

  get name(): string {
    return `node-${this.n}`;
  }

  get url(): string {
    return this.running().url;
  }

  get pid(): number {
    return this.running().pid;
  }

  alive(): boolean {
    const child = this.server?.child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /** Starts the process and learns its process id; resolves once both are done. */
  async start(): Promise<void> {
    if (this.alive()) throw new Error(`${this.name} is already running`);
    this.starts++;
    const { settings } = this;
    this.server = await startServerProcess({
      name: this.name,
      command: [process.execPath, 'bin/archety.js', 'start'],
      env: { ...settings.env, NODE_ID: this.name, PORT: '0' },
      core: settings.core,
      fileLimit: settings.fileLimit,
      ready: /archety listening on (http:\/\/[^ "]+)/,
      timeoutMs: 60_000,
      ...(settings.logDir ? { logFile: path.join(settings.logDir, `${this.name}.${this.starts}.log`) } : {}),
    });
    this.processId = await this.discoverProcessId();
  }

  /** SIGKILL; resolves once the process is gone. */
  async kill(): Promise<void> {
    const child = this.server?.child;
    if (!child || !this.alive()) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** SIGTERM (a drain), SIGKILL after a grace period. */
  async stop(): Promise<void> {
    if (this.alive()) await this.server?.stop();
  }

  private running(): ServerProcess {
    if (!this.server || !this.alive()) throw new Error(`${this.name} is not running`);
    return this.server;
  }

  private async discoverProcessId(): Promise<string> {
    const headers = { authorization: `Bearer ${this.settings.token}`, 'content-type': 'application/json' };
    const created = await fetch(`${this.url}/v1/miniapps`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ app: 'trip-planner', title: `probe of ${this.name}` }),
    });
    const { id } = (await created.json()) as { id?: string };
    if (created.status !== 201 || !id) throw new Error(`${this.name}: POST /v1/miniapps answered ${created.status}`);
    // Reading it runs its actor here, under a lease this process takes.
    const read = await fetch(`${this.url}/v1/miniapps/${id}`, { headers });
    await read.arrayBuffer();
    if (read.status !== 200) throw new Error(`${this.name}: GET /v1/miniapps/${id} answered ${read.status}`);
    const holder = await this.settings.redis.leaseHolder(`miniapp:${id}`);
    if (!holder) throw new Error(`${this.name}: no lease for its own probe session ${id} (is REDIS_URL reaching it?)`);
    return holder;
  }
}

/** The running node whose process id is `processId`, if any. */
export function nodeOf(nodes: BenchNode[], processId: string | null): BenchNode | undefined {
  return processId === null ? undefined : nodes.find((n) => n.alive() && n.processId === processId);
}
