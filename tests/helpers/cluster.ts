/**
 * A cluster for a test: N real `archety start` processes (`spawnServer`) on one database of the
 * file's own and one Redis under a key prefix of the file's own, named node-1…node-N. Each node
 * can be killed, paused (SIGSTOP), resumed and restarted on its port; everything is torn down
 * after the file's tests, paused nodes first resumed.
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import { vi } from 'vitest';
import { onCleanup } from './cleanup.ts';
import { createTestDatabase, type TestDatabase } from './db.ts';
import { REDIS_URL, testPrefix } from './redis.ts';
import { baseEnv, type SpawnedServer, spawnServer } from './server.ts';

type Exit = { code: number | null; signal: NodeJS.Signals | null };

export interface TestCluster {
  nodes: ClusterNode[];
  db: TestDatabase;
  /** The REDIS_PREFIX every node uses (its keys are deleted after the file's tests). */
  redisPrefix: string;
}

/**
 * Starts `n` nodes with `env` added to (or overriding) the test environment, on consecutive
 * free ports, and resolves once every one listens. `nodeEnv[i]` overrides `env` for node i + 1
 * only (e.g. its `REDIS_URL` pointing at a proxy the test can cut).
 */
export async function startCluster(
  n: number,
  env: Record<string, string> = {},
  nodeEnv: Record<string, string>[] = [],
): Promise<TestCluster> {
  if (nodeEnv.length > n) throw new Error(`nodeEnv has ${nodeEnv.length} entries for a cluster of ${n} nodes`);
  const db = await createTestDatabase();
  const redisPrefix = testPrefix();
  const shared = baseEnv(db.url, { REDIS_URL, REDIS_PREFIX: redisPrefix, ...env });
  const first = await consecutiveFreePorts(n);
  const nodes = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      ClusterNode.start({ ...shared, NODE_ID: `node-${i + 1}`, PORT: String(first + i), ...nodeEnv[i] }),
    ),
  );
  return { nodes, db, redisPrefix };
}

/**
 * Ports are picked below Linux's ephemeral range (32768–60999), not with PORT=0: no outgoing
 * connection takes them meanwhile, and a port the kernel picked cannot be bound again while
 * connections the server closed linger in TIME_WAIT, which would fail every restart.
 */
const PORTS = { from: 20_000, to: 32_000 };

/** The first of `count` consecutive ports that are free on 127.0.0.1 right now. */
export async function consecutiveFreePorts(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = PORTS.from + Math.floor(Math.random() * (PORTS.to - PORTS.from - count));
    if (await allFree(first, count)) return first;
  }
  throw new Error(`found no ${count} consecutive free ports in ${PORTS.from}–${PORTS.to} in 50 attempts`);
}

async function allFree(first: number, count: number): Promise<boolean> {
  const servers: net.Server[] = [];
  try {
    for (let port = first; port < first + count; port++) servers.push(await listenOn(port));
    return true;
  } catch {
    return false;
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

function listenOn(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** One process of a test cluster. `url`, `child`, `pid` and `exited` change when it restarts. */
export class ClusterNode {
  private server: SpawnedServer;
  private stopped = false;
  /** The output of the runs before this one (restarts), oldest first. */
  private readonly earlier: string[] = [];

  private constructor(
    private readonly env: Record<string, string>,
    server: SpawnedServer,
  ) {
    this.server = server;
    this.resumeAtCleanup();
  }

  static async start(env: Record<string, string>): Promise<ClusterNode> {
    return new ClusterNode(env, await spawnServer(env));
  }

  get nodeId(): string {
    return this.env.NODE_ID;
  }

  get url(): string {
    return this.server.url;
  }

  get child(): ChildProcess {
    return this.server.child;
  }

  get pid(): number {
    const { pid } = this.server.child;
    if (pid === undefined) throw new Error(`${this.nodeId} has no process id: it could not be spawned`);
    return pid;
  }

  /** Settles with the exit code (or signal) once the current process has ended. */
  get exited(): Promise<Exit> {
    return this.server.exited;
  }

  /** Everything the node printed, across restarts. */
  output(): string {
    return [...this.earlier, this.server.output()].join('');
  }

  /** Sends `signal` (a paused node is resumed first, so it can act on it) and waits for the exit. */
  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<Exit> {
    if (this.running()) {
      this.server.child.kill(signal);
      this.resume();
    }
    return this.server.exited;
  }

  /** Pauses the process (SIGSTOP): it holds its sockets and leases but does nothing. */
  stop(): void {
    this.server.child.kill('SIGSTOP');
    this.stopped = true;
  }

  /** Resumes a paused process (SIGCONT). */
  cont(): void {
    this.server.child.kill('SIGCONT');
    this.stopped = false;
  }

  /**
   * Starts the node again on the same port and node id, once its process has ended (stopped
   * with SIGTERM first if it still runs); resolves once it listens again.
   */
  async restart(): Promise<void> {
    await this.kill('SIGTERM');
    this.earlier.push(this.server.output());
    this.server = await spawnServer(this.env);
    this.resumeAtCleanup();
  }

  private running(): boolean {
    const { child } = this.server;
    return child.exitCode === null && child.signalCode === null;
  }

  /** Registered after spawnServer's kill of this run, so it runs first: a paused process is resumed before. */
  private resumeAtCleanup(): void {
    onCleanup(() => this.resume());
  }

  private resume(): void {
    if (this.stopped && this.running()) this.cont();
    this.stopped = false;
  }
}

/** The node's `/ready` body once it answers 200 (within 15 s). */
export async function waitForReady(node: ClusterNode): Promise<Record<string, unknown>> {
  return vi.waitFor(
    async () => {
      const res = await fetch(`${node.url}/ready`);
      const body = (await res.json()) as Record<string, unknown>;
      if (res.status !== 200) throw new Error(`${node.nodeId} /ready answered ${res.status}: ${JSON.stringify(body)}`);
      return body;
    },
    { timeout: 15_000, interval: 100 },
  );
}
