/**
 * What the cluster benchmark asks Redis: the server-wide command counters (`INFO
 * commandstats`, read at the bounds of a measured window: Redis cannot count per client
 * prefix, so other Redis users on the machine count too, and an idle window of the same
 * length measures them), who holds an actor's lease, and the deletion of the run's keys.
 */
import { Redis } from 'ioredis';

/** Calls per command (lower case, e.g. `publish`, `evalsha`), since Redis started. */
export type CommandCounts = Map<string, number>;

/** Our own reads of the counters: not part of what is measured. */
const OWN_COMMANDS = new Set(['info']);

export class RedisProbe {
  private readonly redis: Redis;
  private subscriber: Redis | undefined;
  private publishes = 0;

  constructor(
    readonly url: string,
    /** The run's REDIS_PREFIX: every key and channel of its processes starts with it. */
    readonly prefix: string,
  ) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 1, connectionName: 'archety-bench' });
  }

  /**
   * Counts the PUBLISHes on the run's channels from now on, exactly (a pattern subscription to
   * the prefix receives each once): the one command Redis' counters cannot tell apart from
   * other users'. `published()` reads the count.
   */
  async countPublishes(): Promise<void> {
    this.subscriber = new Redis(this.url, { maxRetriesPerRequest: 1, connectionName: 'archety-bench-sub' });
    this.subscriber.on('pmessageBuffer', () => {
      this.publishes++;
    });
    await this.subscriber.psubscribe(`${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}*`);
  }

  published(): number {
    return this.publishes;
  }

  /**
   * Stops counting PUBLISHes. A pattern subscriber hears every message of the run, so while it
   * listens, a message to a process that died looks heard to the servers (PUBLISH answers 1),
   * and they notice the death only by a timeout: the failover phase runs without it.
   */
  async stopCountingPublishes(): Promise<void> {
    await this.subscriber?.punsubscribe();
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }

  async version(): Promise<string> {
    const info = await this.redis.info('server');
    return /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  }

  async commandCounts(): Promise<CommandCounts> {
    const text = await this.redis.info('commandstats');
    const counts: CommandCounts = new Map();
    for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      if (!OWN_COMMANDS.has(m[1])) counts.set(m[1], Number(m[2]));
    }
    return counts;
  }

  /** The process id named by the lease of `kind:id` (`<process id>:<n>`), or null when nobody holds it. */
  async leaseHolder(actor: string): Promise<string | null> {
    const value = await this.redis.get(`${this.prefix}actor:${actor}`);
    return value === null ? null : value.slice(0, value.lastIndexOf(':'));
  }

  /** Deletes every key under the run's prefix (SCAN + DEL); resolves with how many. */
  async deleteRunKeys(): Promise<number> {
    let deleted = 0;
    const pattern = `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length) deleted += await this.redis.del(...keys);
    } while (cursor !== '0');
    return deleted;
  }

  async close(): Promise<void> {
    this.subscriber?.disconnect();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

/** Calls per command between two readings, largest first, zeros left out. */
export function countsBetween(before: CommandCounts, after: CommandCounts): [string, number][] {
  const out: [string, number][] = [];
  for (const [cmd, n] of after) {
    const d = n - (before.get(cmd) ?? 0);
    if (d > 0) out.push([cmd, d]);
  }
  return out.sort((a, b) => b[1] - a[1]);
}

export function totalCalls(counts: [string, number][]): number {
  return counts.reduce((n, [, c]) => n + c, 0);
}
