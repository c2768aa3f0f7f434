/**
 * What cluster mode (`REDIS_URL` set) adds to a process: one Redis connection for commands
 * (leases, budgets), the bus (two connections of its own), and the Redis-backed ownership. The
 * host, the routing and the channel are built from these in `src/server.ts`.
 */
import type { Redis } from 'ioredis';
import type { Config } from '../config.ts';
import type { Logger } from '../observability/logger.ts';
import { processId } from './processId.ts';
import { connectRedis, redisReady } from './redis.ts';
import { createRedisBus, type RedisBus } from './redisBus.ts';
import { createRedisOwnership, type RedisOwnership } from './redisOwnership.ts';

export interface Cluster {
  redis: Redis;
  bus: RedisBus;
  ownership: RedisOwnership;
  prefix: string;
  /** True while Redis answers on every connection (`/ready`). */
  ready(): boolean;
  /** After the host released its leases: stops extending, closes the bus and the connection. */
  close(): Promise<void>;
}

export async function connectCluster(config: Readonly<Config> & { redisUrl: string }, log: Logger): Promise<Cluster> {
  const prefix = config.redisPrefix;
  const redis = connectRedis(config.redisUrl, log, 'commands');
  let bus: RedisBus;
  try {
    bus = await createRedisBus({ url: config.redisUrl, prefix, self: processId, log });
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  const ownership = createRedisOwnership({ redis, prefix, leaseMs: config.actorLeaseMs, self: processId, log });
  return {
    redis,
    bus,
    ownership,
    prefix,
    ready: () => redisReady(redis) && bus.connected(),
    async close() {
      await ownership.close();
      await bus.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
