/**
 * Redis restarted under load: a cluster of three processes on a Redis of this test's own
 * (`redis-server` on a free port; the shared one is not touched), edited from SDK clients on
 * every process while Redis is killed and started again, empty. Leases, subscriptions and the
 * relay's receiver are gone with it: every process reconnects, subscribes again, takes what it
 * needs anew, and its clients resume. Afterwards the same accounting as the failover tests:
 * every acknowledged op stored once at the version announced, none announced twice, the state
 * the replay of the stored ops; and the session is served again.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consecutiveFreePorts, startCluster, type TestCluster, waitForReady } from '../helpers/cluster.ts';
import { addBudgetLines, Balancer, expectAccounting, expectProgress, startLoad } from '../helpers/clusterLoad.ts';
import { api, createTrip } from '../helpers/http.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const USERS = ['+15558802001', '+15558802002', '+15558802003', '+15558802004', '+15558802005', '+15558802006'];

function redisServerBinary(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const binary = redisServerBinary();
if (!binary) {
  if (process.env.CI === 'true')
    throw new Error('redis-server is required under CI (the Redis restart test runs its own)');
  console.warn('\n*** redis-server is not installed: the Redis restart test is SKIPPED. ***\n');
}

let port: number;
let redis: ChildProcess | undefined;
let cluster: TestCluster;

async function startRedis(): Promise<void> {
  const child = spawn(
    binary as string,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  redis = child;
  for (let i = 0; i < 100; i++) {
    try {
      execFileSync('redis-cli', ['-p', String(port), 'ping'], { stdio: 'ignore' });
      return;
    } catch {
      await delay(50);
    }
  }
  throw new Error(`redis-server did not start on port ${port}`);
}

function killRedis(): Promise<void> {
  const child = redis;
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

beforeAll(async () => {
  if (!binary) return;
  port = await consecutiveFreePorts(1);
  await startRedis();
  cluster = await startCluster(3, { REDIS_URL: `redis://127.0.0.1:${port}`, ACTOR_LEASE_MS: '1000' });
}, 60_000);

afterAll(async () => {
  await killRedis();
});

describe.skipIf(!binary)('Redis restarted under load', () => {
  it('every process reconnects and the session is served again, nothing acknowledged lost', async () => {
    const tokens = await Promise.all(USERS.map((u) => token(u)));
    const id = await createTrip(cluster.nodes[0].url, tokens[0], { participants: USERS.slice(1) });
    // The budget lines the load's clients edit, added first through node-1.
    const socket = await openSocket(cluster.nodes[0].url, id, tokens[0]);
    await socket.next('snapshot', 10_000);
    await addBudgetLines(socket, USERS.length);
    socket.close();
    const balancer = new Balancer(cluster.nodes);
    const load = startLoad({
      cluster,
      balancer,
      sessionId: id,
      clients: USERS.map((user, i) => ({ user, token: tokens[i], home: i % 3 })),
    });
    try {
      await load.connected();
      await expectProgress(load, 0, 10);

      await killRedis();
      await delay(1000);
      await startRedis();
      const restartedAt = performance.now();
      for (const node of cluster.nodes) await waitForReady(node);
      await expectProgress(load, restartedAt, 10, 20_000).catch((err) => {
        // What each node decided (TEST_LOG_LEVEL=info shows most), for the failure's report.
        for (const node of cluster.nodes) {
          const lines = node
            .output()
            .split('\n')
            .filter((line) => line && !line.includes('"msg":"request"'));
          console.info(`[redis restart] ${node.nodeId}:\n${lines.slice(-40).join('\n')}`);
        }
        throw err;
      });

      await load.stop(20_000);
      const accounting = await expectAccounting(load, cluster, id, cluster.nodes[1], tokens[1]);
      console.info(`[redis restart] ${JSON.stringify(accounting)}`);
      for (const node of cluster.nodes) {
        const ready = await api(node.url, 'GET', '/ready');
        expect(ready.body).toMatchObject({ mode: 'cluster', redis: { reachable: true } });
      }
    } finally {
      load.close();
    }
  }, 90_000);
});
