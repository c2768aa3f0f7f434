/**
 * The Redis `Ownership` of cluster mode against a real Redis: two ownerships with process ids of
 * their own stand for two processes. Leases last 1 s so the tests that wait for one to expire
 * stay short. A lost lease is reproduced as it happens: the holder's connection is reset (a
 * proxy cut), or stalls (a proxy that holds the holder's bytes, as a partitioned link does, and
 * delivers them late).
 */
import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { connectRedis, redisReady } from '../../src/cluster/redis.ts';
import { createRedisOwnership, type RedisOwnership } from '../../src/cluster/redisOwnership.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { REDIS_URL, redisReachable, testPrefix } from '../helpers/redis.ts';
import { startTcpProxy } from '../helpers/tcpProxy.ts';

const LEASE_MS = 1000;
const ok = await redisReachable();
const log = pino({ level: 'silent' });

interface Node {
  redis: Redis;
  ownership: RedisOwnership;
  /** Every lost lease, with when (`performance.now()`) it was reported. */
  lost: { key: string; at: number }[];
}

describe.skipIf(!ok)('Redis ownership', () => {
  const prefix = testPrefix();
  /** Reads leases as any process would, never through a proxy. */
  const probe = new Redis(REDIS_URL, { lazyConnect: true });
  onCleanup(() => probe.disconnect());

  function node(self: string, url = REDIS_URL): Node {
    const redis = connectRedis(url, log, self);
    const ownership = createRedisOwnership({ redis, prefix, leaseMs: LEASE_MS, self, log });
    const lost: Node['lost'] = [];
    ownership.onLost((key) => lost.push({ key, at: performance.now() }));
    onCleanup(async () => {
      await ownership.close();
      redis.disconnect();
    });
    return { redis, ownership, lost };
  }

  /** Asks for `key` every 20 ms until `n` gets it; resolves with when (`performance.now()`). */
  async function takeOver(n: Node, key: string): Promise<number> {
    while (!(await n.ownership.acquire(key))) await new Promise((r) => setTimeout(r, 20));
    return performance.now();
  }

  it('lets one process hold an actor at a time, answers the other at once, and names the holder', async () => {
    const a = node('proc-a');
    const b = node('proc-b');
    expect(await a.ownership.ownerOf('miniapp:one')).toBeNull();
    expect(await a.ownership.acquire('miniapp:one')).toBe(true);
    const asked = performance.now();
    expect(await b.ownership.acquire('miniapp:one')).toBe(false);
    expect(performance.now() - asked).toBeLessThan(LEASE_MS / 4);
    expect(await b.ownership.ownerOf('miniapp:one')).toBe('proc-a');
    expect(await a.ownership.ownerOf('miniapp:one')).toBe('proc-a');
    expect(await a.ownership.acquire('miniapp:one')).toBe(false);
  });

  it('keeps a lease well past its length while the holder extends it', async () => {
    const a = node('proc-a');
    const b = node('proc-b');
    expect(await a.ownership.acquire('miniapp:long')).toBe(true);
    // Time passing is the point here: three lease lengths.
    await new Promise((r) => setTimeout(r, 3 * LEASE_MS));
    expect(await b.ownership.acquire('miniapp:long')).toBe(false);
    expect(await b.ownership.ownerOf('miniapp:long')).toBe('proc-a');
    expect(a.lost).toEqual([]);
    // One extension call per third of the lease, for all the leases a process holds.
    expect(a.ownership.stats().extendCalls).toBeGreaterThanOrEqual(8);
    expect(a.ownership.stats().extendCalls).toBeLessThanOrEqual(10);
  });

  it('lets another process take the actor as soon as the holder releases it', async () => {
    const a = node('proc-a');
    const b = node('proc-b');
    expect(await a.ownership.acquire('miniapp:handover')).toBe(true);
    await a.ownership.release('miniapp:handover');
    expect(await b.ownership.acquire('miniapp:handover')).toBe(true);
    expect(await a.ownership.ownerOf('miniapp:handover')).toBe('proc-b');
    // A release of what is no longer yours changes nothing.
    await a.ownership.release('miniapp:handover');
    expect(await a.ownership.ownerOf('miniapp:handover')).toBe('proc-b');
    expect(a.lost).toEqual([]);
  });

  it('reports a lease lost within its length when the holder is cut off from Redis, before another can take it; the holder reconnects by itself', async () => {
    const proxy = await startTcpProxy(REDIS_URL);
    const a = node('proc-a', proxy.url);
    const b = node('proc-b');
    expect(await a.ownership.acquire('conversation:cut')).toBe(true);
    // The deadline falls within the lease; the timer that acts on it runs as late as this
    // process's event loop is (a suite sharing two cores delayed it by ~100 ms once).
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const cutAt = performance.now();
    proxy.cut();
    const takenAt = await takeOver(b, 'conversation:cut');
    await vi.waitFor(() => expect(a.lost).toHaveLength(1), { timeout: 2 * LEASE_MS });
    loop.disable();
    const [lost] = a.lost;
    expect(lost.key).toBe('conversation:cut');
    expect(lost.at - cutAt).toBeLessThanOrEqual(LEASE_MS + loop.max / 1e6);
    expect(lost.at).toBeLessThanOrEqual(takenAt);
    expect(takenAt - cutAt).toBeLessThanOrEqual(2 * LEASE_MS);
    expect(await b.ownership.ownerOf('conversation:cut')).toBe('proc-b');
    // The cut-off process is not ready meanwhile, reconnects by itself, and holds leases again.
    expect(redisReady(a.redis)).toBe(false);
    proxy.restore();
    await vi.waitFor(() => expect(redisReady(a.redis)).toBe(true), { timeout: 5000 });
    expect(await a.ownership.acquire('conversation:cut')).toBe(false);
    expect(await a.ownership.acquire('conversation:after-cut')).toBe(true);
  });

  it('never lets a lost holder extend over the new owner, even when its extensions arrive late', async () => {
    const link = await startStallingProxy(REDIS_URL);
    const a = node('proc-a', link.url);
    const b = node('proc-b');
    expect(await a.ownership.acquire('conversation:stall')).toBe(true);
    const stalledAt = performance.now();
    link.stall();
    const takenAt = await takeOver(b, 'conversation:stall');
    await vi.waitFor(() => expect(a.lost).toHaveLength(1));
    expect(a.lost[0].at - stalledAt).toBeLessThanOrEqual(LEASE_MS);
    expect(a.lost[0].at).toBeLessThanOrEqual(takenAt);
    const late = a.ownership.stats().extendCalls;
    expect(late).toBeGreaterThan(0);
    // The holder's held-back extensions now reach Redis, after the new owner took the key: refused.
    link.flow();
    await vi.waitFor(() => expect(a.ownership.stats().extendRefused).toBe(late));
    expect(await probe.get(`${prefix}actor:conversation:stall`)).toMatch(/^proc-b:/);
    expect(await a.ownership.ownerOf('conversation:stall')).toBe('proc-b');
    await new Promise((r) => setTimeout(r, 2 * LEASE_MS));
    expect(await probe.get(`${prefix}actor:conversation:stall`)).toMatch(/^proc-b:/);
    expect(b.lost).toEqual([]);
    expect(a.lost).toHaveLength(1);
    // Nothing more was asked to extend after the lease was lost.
    expect(a.ownership.stats().extendCalls).toBe(late);
  });

  it('reports a lease lost when its holder was paused past it, without extending it', async () => {
    const a = node('proc-a');
    expect(await a.ownership.acquire('miniapp:paused')).toBe(true);
    const calls = a.ownership.stats().extendCalls;
    // A pause of this whole process (as SIGSTOP or a long GC would): no timer, no I/O.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LEASE_MS + 200);
    await vi.waitFor(() => expect(a.lost.map((l) => l.key)).toEqual(['miniapp:paused']));
    expect(a.ownership.stats().extendCalls).toBe(calls);
    expect(await a.ownership.ownerOf('miniapp:paused')).toBeNull();
  });
});

/**
 * A proxy whose link can stall: what the client sends meanwhile is held back, then delivered
 * in order on `flow()`, as a congested or partitioned network would. Closed after the file.
 */
async function startStallingProxy(targetUrl: string): Promise<{ url: string; stall(): void; flow(): void }> {
  const target = new URL(targetUrl);
  const links = new Set<{ upstream: net.Socket; held: Buffer[] }>();
  let stalled = false;
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.hostname, port: Number(target.port) });
    const link = { upstream, held: [] as Buffer[] };
    links.add(link);
    client.on('data', (chunk) => (stalled ? link.held.push(chunk) : upstream.write(chunk)));
    upstream.on('data', (chunk) => client.write(chunk));
    const end = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('close', end);
      socket.on('error', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => {
    for (const link of links) link.upstream.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    stall() {
      stalled = true;
    },
    flow() {
      stalled = false;
      for (const link of links) link.upstream.write(Buffer.concat(link.held.splice(0)));
    },
  };
}
