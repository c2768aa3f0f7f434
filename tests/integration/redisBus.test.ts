/**
 * The Redis bus against a real Redis: messages between processes and to topics, counted
 * subscriptions, one sender's order across its channels, malformed messages dropped, and the
 * subscriptions coming back (and `onReconnect` firing) after the connection was killed or Redis
 * was unreachable for a while (through a proxy of the test's own, not by stopping Redis).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { BusHandler } from '../../src/cluster/Bus.ts';
import { createRedisBus, type RedisBus } from '../../src/cluster/redisBus.ts';
import { createLogger, type Logger } from '../../src/observability/logger.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { REDIS_URL, redisReachable, testPrefix } from '../helpers/redis.ts';
import { startTcpProxy } from '../helpers/tcpProxy.ts';

const ok = await redisReachable();
const silent = createLogger({ level: 'silent', format: 'json' });

interface Received {
  message: unknown;
  from: string;
}

describe.skipIf(!ok)('the Redis bus', () => {
  let prefix: string;
  let admin: Redis;

  beforeAll(() => {
    prefix = testPrefix();
    admin = new Redis(REDIS_URL);
    onCleanup(() => admin.quit());
  });

  async function newBus(url = REDIS_URL, log: Logger = silent): Promise<RedisBus> {
    const bus = await createRedisBus({ url, prefix, self: randomBytes(6).toString('hex'), log });
    onCleanup(() => bus.close());
    return bus;
  }

  /** Everything a handler hears, in order. */
  function recorder(): { got: Received[]; handler: BusHandler } {
    const got: Received[] = [];
    return { got, handler: (message, from) => got.push({ message, from }) };
  }

  function inbox(bus: RedisBus): Received[] {
    const { got, handler } = recorder();
    bus.onMessage(handler);
    return got;
  }

  async function subscribers(channel: string): Promise<number> {
    const [, count] = (await admin.pubsub('NUMSUB', channel)) as [string, number];
    return Number(count);
  }

  /** Kills the connection named `name` (`CLIENT SETNAME`) from Redis's side. */
  async function killConnection(name: string): Promise<void> {
    const list = (await admin.client('LIST')) as string;
    const line = list.split('\n').find((l) => l.includes(` name=${name} `));
    const id = line?.match(/^id=(\d+) /)?.[1];
    if (!id) throw new Error(`no Redis connection named ${name}`);
    await admin.client('KILL', 'ID', id);
  }

  it('delivers a message sent to a process to that process only, with its sender', async () => {
    const a = await newBus();
    const b = await newBus();
    const toA = inbox(a);
    const toB = inbox(b);
    a.send(b.self, { hello: 'b', n: [1, 2] });
    b.send(a.self, 'hello a');
    await vi.waitFor(() => {
      expect(toB).toEqual([{ message: { hello: 'b', n: [1, 2] }, from: a.self }]);
      expect(toA).toEqual([{ message: 'hello a', from: b.self }]);
    });
    expect(a.connected() && b.connected()).toBe(true);
  });

  it('publishes a topic to every subscribed process, the publisher included', async () => {
    const a = await newBus();
    const b = await newBus();
    const onA = recorder();
    const onB = recorder();
    await a.subscribe('room', onA.handler);
    const commands = b.stats().subscriptionCommands;
    await b.subscribe('room', onB.handler);
    // Resolved means Redis has it: nothing published from now on can miss this subscriber.
    expect(await subscribers(`${prefix}t:room`)).toBe(2);
    const second = recorder();
    await b.subscribe('room', second.handler);
    expect(b.stats().subscriptionCommands).toBe(commands + 1);

    a.publish('room', { v: 1 });
    await vi.waitFor(() => {
      for (const got of [onA.got, onB.got, second.got]) expect(got).toEqual([{ message: { v: 1 }, from: a.self }]);
    });
  });

  it('counts subscriptions: delivery stops only with the last unsubscribe, which unsubscribes in Redis', async () => {
    const a = await newBus();
    const b = await newBus();
    const toB = inbox(b);
    const one = recorder();
    const two = recorder();
    await b.subscribe('counted', one.handler);
    await b.subscribe('counted', two.handler);
    await b.subscribe('counted', two.handler);

    b.unsubscribe('counted', one.handler);
    a.publish('counted', 1);
    await vi.waitFor(() => expect(two.got.map((r) => r.message)).toEqual([1]));
    b.unsubscribe('counted', two.handler);
    a.publish('counted', 2);
    await vi.waitFor(() => expect(two.got.map((r) => r.message)).toEqual([1, 2]));
    expect(await subscribers(`${prefix}t:counted`)).toBe(1);

    b.unsubscribe('counted', two.handler);
    await vi.waitFor(async () => expect(await subscribers(`${prefix}t:counted`)).toBe(0));
    a.publish('counted', 3);
    // One sender's messages arrive in order: once the marker is here, 3 would have been too.
    a.send(b.self, 'marker');
    await vi.waitFor(() => expect(toB.map((r) => r.message)).toEqual(['marker']));
    expect(one.got.map((r) => r.message)).toEqual([]);
    expect(two.got.map((r) => r.message)).toEqual([1, 2]);
  });

  it('keeps one sender’s order across its process channel and a topic (10,000 messages)', async () => {
    const a = await newBus();
    const b = await newBus();
    const seen: unknown[] = [];
    b.onMessage((message) => seen.push(message));
    await b.subscribe('ordered', (message) => seen.push(message));
    const before = { a: a.stats(), b: b.stats() };

    const total = 10_000;
    for (let i = 0; i < total; i++) {
      if (i % 3 === 0) a.send(b.self, i);
      else a.publish('ordered', i);
    }
    await vi.waitFor(() => expect(seen).toHaveLength(total), { timeout: 15_000 });
    expect(seen).toEqual(Array.from({ length: total }, (_, i) => i));
    expect(a.stats().published - before.a.published).toBe(total);
    expect(b.stats().received - before.b.received).toBe(total);
    expect(a.stats().dropped).toBe(0);
  });

  it('drops a malformed message with one debug line and goes on delivering', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', format: 'json', destination: { write: (line) => lines.push(line) } });
    const a = await newBus();
    const b = await newBus(REDIS_URL, log);
    const toB = inbox(b);
    const channel = `${prefix}p:${b.self}`;
    const malformed = ['not json', '{"from":"x","body":1}', '[1,2]', '["x"]', '"just a string"'];
    for (const raw of malformed) await admin.publish(channel, raw);
    a.send(b.self, 'after');

    await vi.waitFor(() => expect(toB).toEqual([{ message: 'after', from: a.self }]));
    expect(b.stats().malformed).toBe(malformed.length);
    const drops = lines.filter((line) => line.includes('dropped a malformed message'));
    expect(drops).toHaveLength(malformed.length);
    for (const line of drops) expect(JSON.parse(line)).toMatchObject({ level: 20, channel });
  });

  it('goes on delivering to the other handlers when one throws', async () => {
    const a = await newBus();
    const b = await newBus();
    b.onMessage(() => {
      throw new Error('handler bug');
    });
    const toB = inbox(b);
    a.send(b.self, 1);
    a.send(b.self, 2);
    await vi.waitFor(() => expect(toB.map((r) => r.message)).toEqual([1, 2]));
  });

  it('refuses a message that is not JSON with a TypeError', async () => {
    const a = await newBus();
    expect(() => a.send(a.self, undefined)).toThrow(TypeError);
    expect(() => a.publish('t', () => 1)).toThrow(TypeError);
    expect(a.stats().published).toBe(0);
  });

  it('subscribes again after its subscribing connection was killed, then runs onReconnect', async () => {
    const a = await newBus();
    const b = await newBus();
    const toB = inbox(b);
    const room = recorder();
    await b.subscribe('survives', room.handler);
    const gone = recorder();
    await b.subscribe('gone', gone.handler);
    b.unsubscribe('gone', gone.handler);
    let reconnects = 0;
    b.onReconnect(() => {
      reconnects++;
    });

    await killConnection(`archety:${b.self}:sub`);

    await vi.waitFor(() => expect(reconnects).toBe(1), { timeout: 5000 });
    expect(b.connected()).toBe(true);
    expect(await subscribers(`${prefix}t:survives`)).toBe(1);
    expect(await subscribers(`${prefix}p:${b.self}`)).toBe(1);
    expect(await subscribers(`${prefix}t:gone`)).toBe(0);
    a.publish('survives', 'topic after');
    a.send(b.self, 'channel after');
    await vi.waitFor(() => {
      expect(room.got).toEqual([{ message: 'topic after', from: a.self }]);
      expect(toB).toEqual([{ message: 'channel after', from: a.self }]);
    });

    // Messages it sent meanwhile may be lost too: losing only the publishing side counts.
    await killConnection(`archety:${b.self}:pub`);
    await vi.waitFor(() => expect(reconnects).toBe(2), { timeout: 5000 });
    expect(b.connected()).toBe(true);
  });

  it('is not connected while Redis is unreachable, and comes back with its subscriptions', async () => {
    const proxy = await startTcpProxy(REDIS_URL);
    const a = await newBus();
    const b = await newBus(proxy.url);
    const toB = inbox(b);
    const room = recorder();
    await b.subscribe('before', room.handler);
    let reconnects = 0;
    b.onReconnect(() => {
      reconnects++;
    });
    expect(b.connected()).toBe(true);

    proxy.cut();
    await vi.waitFor(() => expect(b.connected()).toBe(false));
    b.send(a.self, 'lost');
    expect(b.stats().dropped).toBe(1);
    // A subscribe while Redis is away waits for it, and is confirmed once it is back.
    const late = recorder();
    const lateSubscribed = b.subscribe('during', late.handler);
    expect(b.connected()).toBe(false);

    proxy.restore();
    await lateSubscribed;
    await vi.waitFor(() => expect(reconnects).toBe(1), { timeout: 10_000 });
    expect(b.connected()).toBe(true);
    a.publish('before', 1);
    a.publish('during', 2);
    a.send(b.self, 3);
    await vi.waitFor(() => {
      expect(room.got.map((r) => r.message)).toEqual([1]);
      expect(late.got.map((r) => r.message)).toEqual([2]);
      expect(toB.map((r) => r.message)).toEqual([3]);
    });
  });
});
