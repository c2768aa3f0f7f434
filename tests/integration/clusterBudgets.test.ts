/**
 * Cluster-wide budgets against a real Redis (docs/operations.md "Budgets in cluster mode"):
 * rate limiters and socket caps of several processes (each its own client and process id)
 * count together; a process that died stops counting; while Redis does not answer, each
 * process keeps the same budget alone (one warn line per outage) and Redis is told its counts
 * again once it answers.
 */
import net from 'node:net';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { redisKeyOf } from '../../src/cluster/redis.ts';
import { createRedisRateLimiter, fixedWindowOf } from '../../src/limits/createRedisRateLimiter.ts';
import { createRedisSocketCaps, type RedisSocketCapsOptions } from '../../src/limits/createRedisSocketCaps.ts';
import type { RateLimiter } from '../../src/limits/RateLimiter.ts';
import type { SocketCaps } from '../../src/limits/socketCaps.ts';
import { createLogger, type Logger } from '../../src/observability/logger.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { REDIS_URL, redisReachable, testPrefix } from '../helpers/redis.ts';
import { startTcpProxy } from '../helpers/tcpProxy.ts';

const ok = await redisReachable();
const silent = createLogger({ level: 'silent', format: 'json' });

/** A logger whose lines a test can read. */
function recordingLog(): { log: Logger; messages: (level: 'warn' | 'info') => string[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = createLogger({
    level: 'info',
    format: 'json',
    destination: { write: (line: string) => void lines.push(JSON.parse(line)) },
  });
  const levels = { info: 30, warn: 40 };
  return { log, messages: (level) => lines.filter((l) => l.level === levels[level]).map((l) => l.msg) };
}

/** One process's Redis connection (reconnecting quickly, so a restored proxy is noticed soon). */
function client(url = REDIS_URL): Redis {
  const redis = new Redis(url, { retryStrategy: () => 50, maxRetriesPerRequest: 1 });
  // A cut connection is what some tests are about; ioredis reports it as an error event.
  redis.on('error', () => {});
  onCleanup(() => redis.disconnect());
  return redis;
}

/** Takes `n` times (alternating between `limiters`), answering every wait. */
async function takes(limiters: RateLimiter[], key: string, n: number): Promise<number[]> {
  const waits: number[] = [];
  for (let i = 0; i < n; i++) waits.push(await limiters[i % limiters.length].take(key));
  return waits;
}

describe('fixed windows standing in for token buckets', () => {
  it('keeps the burst and the sustained rate', () => {
    expect(fixedWindowOf(500, 2000)).toEqual({ points: 2000, duration: 4 });
    expect(fixedWindowOf(20 / 60, 5)).toEqual({ points: 5, duration: 15 });
    // A burst below the rate: a 1 s window that still lets the rate through.
    expect(fixedWindowOf(10, 1)).toEqual({ points: 10, duration: 1 });
  });

  it('refuses a rate or burst that limits nothing', () => {
    expect(() => fixedWindowOf(0, 5)).toThrow(/rate above 0/);
    expect(() => fixedWindowOf(1, 0)).toThrow(/burst of at least 1/);
  });
});

describe.skipIf(!ok)('cluster-wide rate limits', () => {
  let prefix: string;

  beforeAll(() => {
    prefix = testPrefix();
  });

  function limiter(name: string, perSecond: number, burst: number, redis = client(), log = silent): RateLimiter {
    const made = createRedisRateLimiter({ redis, prefix, name, perSecond, burst, log, timeoutMs: 300 });
    onCleanup(() => made.close());
    return made;
  }

  it('lets a burst of `burst` through across two processes, then tells both to wait', async () => {
    const [a, b] = [limiter('shared', 2, 10), limiter('shared', 2, 10)];
    expect(await takes([a, b], 'relay-1', 10)).toEqual(Array(10).fill(0));
    for (const one of [a, b]) {
      const wait = await one.take('relay-1');
      expect(wait).toBeGreaterThanOrEqual(1);
      expect(wait).toBeLessThanOrEqual(5);
    }
    expect(await b.take('relay-2')).toBe(0);
  });

  it('gives the budget back when its window ends', async () => {
    const [a, b] = [limiter('window', 5, 5), limiter('window', 5, 5)];
    expect(await takes([a, b], 'sender', 5)).toEqual(Array(5).fill(0));
    expect(await a.take('sender')).toBe(1);
    await vi.waitFor(async () => expect(await b.take('sender')).toBe(0), { timeout: 3000, interval: 100 });
  });

  it('counts a take of several tokens as that many', async () => {
    const [a, b] = [limiter('cost', 1, 10), limiter('cost', 1, 10)];
    expect(await a.take('batch', 7)).toBe(0);
    expect(await b.take('batch', 4)).toBeGreaterThan(0);
  });

  it('names nobody in Redis: a sender is counted under a hash of its number', async () => {
    const redis = client();
    expect(await limiter('privacy', 1, 5, redis).take('+15550001234')).toBe(0);
    const keys = await redis.keys(`${prefix}rl:privacy*`);
    expect(keys).toHaveLength(1);
    expect(keys[0]).not.toContain('5550001234');
  });

  it('keeps limiters of different names apart', async () => {
    const redis = client();
    expect(await limiter('senders', 1, 1, redis).take('k')).toBe(0);
    expect(await limiter('relays', 1, 1, redis).take('k')).toBe(0);
  });

  it('limits each process alone while Redis is cut off, says so once, and counts together again after', async () => {
    const proxy = await startTcpProxy(REDIS_URL);
    const { log, messages } = recordingLog();
    const cutOff = limiter('outage', 1, 3, client(proxy.url), log);
    const other = limiter('outage', 1, 3);
    expect(await cutOff.take('k')).toBe(0);

    proxy.cut();
    // Its own token bucket, full when the outage began: 3 at once, then a wait.
    expect(await takes([cutOff], 'fresh', 4)).toEqual([0, 0, 0, 1]);
    expect(messages('warn')).toHaveLength(1);
    expect(messages('warn')[0]).toMatch(/the outage rate limit is enforced by each process alone/);

    proxy.restore();
    // Back in Redis (the first take that Redis answers says so): the processes share one window again.
    await vi.waitFor(
      async () => {
        await cutOff.take('probe');
        expect(messages('info')).toHaveLength(1);
      },
      { timeout: 5000, interval: 100 },
    );
    const shared = await takes([other, cutOff], 'after', 4);
    expect(shared.slice(0, 3)).toEqual([0, 0, 0]);
    expect(shared[3]).toBeGreaterThan(0);
    expect(messages('warn')).toHaveLength(1);
  });

  it('decides alone when Redis takes longer than the deadline to answer', async () => {
    // Accepts connections and never answers: a connection cut off without a reset.
    const accepted = new Set<net.Socket>();
    const mute = net.createServer((socket) => accepted.add(socket.on('error', () => {})));
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', () => resolve()));
    onCleanup(() => {
      for (const socket of accepted) socket.destroy();
      return new Promise((resolve) => mute.close(resolve));
    });
    const port = (mute.address() as net.AddressInfo).port;
    const slow = limiter('mute', 1, 2, client(`redis://127.0.0.1:${port}`));
    const started = performance.now();
    expect(await takes([slow], 'k', 3)).toEqual([0, 0, 1]);
    expect(performance.now() - started).toBeLessThan(3000);
  });
});

describe.skipIf(!ok)('cluster-wide socket caps', () => {
  let prefix: string;
  let admin: Redis;

  beforeAll(() => {
    prefix = testPrefix();
    admin = client();
  });

  let nextProcess = 0;
  /** The caps of one more process (its own client and process id), on endpoint `name`. */
  function processCaps(name: string, options: Partial<RedisSocketCapsOptions> = {}): SocketCaps {
    const caps = createRedisSocketCaps({
      redis: client(),
      prefix,
      name,
      log: silent,
      processId: `p${nextProcess++}`,
      livenessMs: 300,
      timeoutMs: 300,
      ...options,
    });
    onCleanup(() => caps.close());
    return caps;
  }

  const user = (max: number) => ({ key: 'u:alice', max });

  it('shares one cap between two processes', async () => {
    const [a, b] = [processCaps('shared'), processCaps('shared')];
    expect(await a.admit([user(3)])).toBeNull();
    expect(await a.admit([user(3)])).toBeNull();
    expect(await b.admit([user(3)])).toBeNull();
    expect(await b.admit([user(3)])).toEqual(user(3));
    expect(await a.admit([user(3)])).toEqual(user(3));
    a.release([user(3).key]);
    await vi.waitFor(async () => expect(await b.admit([user(3)])).toBeNull());
  });

  it('names nobody in Redis: a user is counted under a hash of its id', async () => {
    const caps = processCaps('privacy');
    expect(await caps.admit([{ key: '+15550001234', max: 3 }])).toBeNull();
    const keys = await admin.keys(`${prefix}caps:privacy:*`);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.filter((k) => k.includes('5550001234'))).toEqual([]);
  });

  it('counts a socket against all its caps or none', async () => {
    const [a, b] = [processCaps('all-or-none'), processCaps('all-or-none')];
    const session = { key: 's:trip', max: 1 };
    expect(await a.admit([user(3), session])).toBeNull();
    expect(await b.admit([user(3), session])).toEqual(session);
    expect(await b.admit([user(3)])).toBeNull();
    expect(await b.admit([user(3)])).toBeNull();
    expect(await a.admit([user(3)])).toEqual(user(3));
  });

  it('admits exactly max of concurrent upgrades on several processes', async () => {
    const all = [processCaps('race'), processCaps('race'), processCaps('race')];
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => all[i % 3].admit([user(7)])));
    expect(answers.filter((full) => full === null)).toHaveLength(7);
  });

  it("stops counting a dead process's sockets once its liveness passed, and deletes its counts", async () => {
    const survivor = processCaps('dead');
    const redis = client();
    const dying = createRedisSocketCaps({
      redis,
      prefix,
      name: 'dead',
      log: silent,
      processId: 'dying',
      livenessMs: 300,
    });
    for (let i = 0; i < 3; i++) expect(await dying.admit([user(3)])).toBeNull();
    expect(await survivor.admit([user(3)])).toEqual(user(3));

    // Dies without a word: no release, no heartbeat, no goodbye.
    redis.disconnect();
    await vi.waitFor(async () => expect(await survivor.admit([user(3)])).toBeNull(), { timeout: 3000, interval: 50 });
    await vi.waitFor(async () => {
      expect(await admin.hkeys(`${prefix}caps:dead:k:u:alice`)).not.toContain('dying');
      expect(await admin.exists(`${prefix}caps:dead:owned:dying`)).toBe(0);
      expect(await admin.hexists(`${prefix}caps:dead:alive`, 'dying')).toBe(0);
    });
    await dying.close();
  });

  it("stops counting a closed process's sockets at once", async () => {
    const [a, b] = [processCaps('leave'), processCaps('leave', { livenessMs: 60_000 })];
    expect(await b.admit([user(1)])).toBeNull();
    expect(await a.admit([user(1)])).toEqual(user(1));
    await b.close();
    expect(await a.admit([user(1)])).toBeNull();
  });

  it('caps each process alone while Redis is cut off, and tells Redis its sockets once it answers', async () => {
    const proxy = await startTcpProxy(REDIS_URL);
    const { log, messages } = recordingLog();
    const cutOff = processCaps('outage', { redis: client(proxy.url), log, processId: 'cut-off' });
    const other = processCaps('outage');
    expect(await cutOff.admit([user(2)])).toBeNull();

    proxy.cut();
    expect(await cutOff.admit([user(2)])).toBeNull();
    expect(await cutOff.admit([user(2)])).toEqual(user(2));
    expect(messages('warn')).toHaveLength(1);

    proxy.restore();
    // The heartbeat after the outage writes this process's 2 sockets, so the cap is full for all.
    const counted = () => admin.hget(`${prefix}caps:outage:k:${redisKeyOf('u:alice')}`, 'cut-off');
    await vi.waitFor(async () => expect(await counted()).toBe('2'), { timeout: 5000, interval: 50 });
    expect(await other.admit([user(2)])).toEqual(user(2));
    expect(messages('info').length).toBeGreaterThan(0);
  });

  it('tells Redis its sockets again after Redis forgot them (a restart without persistence)', async () => {
    const [a, b] = [processCaps('forgot'), processCaps('forgot')];
    expect(await a.admit([user(2)])).toBeNull();
    expect(await a.admit([user(2)])).toBeNull();
    const keys = await admin.keys(`${prefix}caps:forgot:*`);
    await admin.del(...keys);
    await vi.waitFor(async () => expect(await b.admit([user(2)])).toEqual(user(2)), { timeout: 3000, interval: 50 });
  });
});
