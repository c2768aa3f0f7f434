/**
 * Socket caps counted across the processes of a cluster, so MAX_SOCKETS_PER_USER and
 * MAX_SOCKETS_PER_SESSION hold for the whole cluster.
 *
 * Keys, under `<prefix>caps:<name>:` (one namespace per endpoint):
 * - `k:<hash of the cap key>` (`redisKeyOf`: a user id names nobody in Redis): a hash of open
 *   sockets per process (field: the process id);
 * - `alive`: a hash of each process's liveness deadline (ms, Redis's clock), which its
 *   heartbeat pushes forward every `livenessMs / 3`;
 * - `owned:<process id>`: the cap hashes in which a process has a field.
 * Admission is one Lua script: it sums the counts of the live processes, deletes the fields of
 * dead ones, and counts the socket against every cap or none. A process that died stops
 * counting once its deadline passes (at most `livenessMs`), and the next heartbeat of any
 * process deletes its fields everywhere (through its `owned` set).
 *
 * This process's own counts are kept here too: they are the truth Redis mirrors. When Redis
 * does not answer (RedisGuard), admission checks the caps against this process's sockets alone;
 * afterwards, and whenever a heartbeat finds that Redis forgot this process (it restarted, or
 * this process was paused past its deadline), the heartbeat rewrites this process's fields from
 * them (admissions in flight included, so none is lost or counted twice).
 */
import type { Redis } from 'ioredis';
import { processId } from '../cluster/processId.ts';
import { redisKeyOf } from '../cluster/redis.ts';
import type { Logger } from '../observability/logger.ts';
import { RedisGuard } from './RedisGuard.ts';
import { CapCounts, type CapLimit, type SocketCaps } from './socketCaps.ts';

export interface RedisSocketCapsOptions {
  /** A client without a `keyPrefix` of its own: `prefix` is the whole prefix. */
  redis: Redis;
  /** `REDIS_PREFIX`. */
  prefix: string;
  /** The endpoint whose sockets these are (`miniapp`, `relay`): endpoints count apart. */
  name: string;
  log: Logger;
  /** How long (ms) a process that stopped beating still counts (default 15,000). */
  livenessMs?: number;
  /** Whose sockets these are (default: this process). */
  processId?: string;
  /** How long (ms) an upgrade waits for Redis before this process decides alone (default 500). */
  timeoutMs?: number;
}

const DEFAULT_LIVENESS_MS = 15_000;

/** Redis's clock in ms, so that processes with skewed clocks agree on who is alive. */
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/** Deletes `pid`'s field from every cap hash its `owned` set names, and the set. */
const FORGET = `local function forget(owned, pid)
  for _, key in ipairs(redis.call('SMEMBERS', owned)) do redis.call('HDEL', key, pid) end
  redis.call('DEL', owned)
end
`;

/** KEYS: alive, owned (this process), cap hashes. ARGV: pid, max per cap. → 0, or the full cap's index (1-based). */
const ADMIT = `${NOW}
local pid = ARGV[1]
for i = 3, #KEYS do
  local sum = 0
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    local other = fields[j]
    if other == pid or tonumber(redis.call('HGET', KEYS[1], other) or '0') > now then
      sum = sum + tonumber(fields[j + 1])
    else
      redis.call('HDEL', KEYS[i], other)
    end
  end
  if sum >= tonumber(ARGV[i - 1]) then return i - 2 end
end
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], pid, 1)
  redis.call('SADD', KEYS[2], KEYS[i])
end
return 0`;

/** KEYS: owned, cap hashes. ARGV: pid. */
const RELEASE = `for i = 2, #KEYS do
  if redis.call('HINCRBY', KEYS[i], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[i], ARGV[1])
    redis.call('SREM', KEYS[1], KEYS[i])
  end
end
return 0`;

/**
 * KEYS: alive. ARGV: pid, liveness (ms), the owned sets' prefix. Pushes this process's deadline
 * forward and forgets the processes whose deadline passed. → 1 when Redis still knew this
 * process as alive, 0 when it had forgotten it (its fields may be gone).
 */
const BEAT = `${NOW}${FORGET}
local known = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') > now
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now + tonumber(ARGV[2])))
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if tonumber(entries[i + 1]) <= now then
    forget(ARGV[3] .. entries[i], entries[i])
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
if known then return 1 end
return 0`;

/** KEYS: owned, cap hashes. ARGV: pid, count per cap. Replaces all of this process's fields. */
const REWRITE = `${FORGET}
forget(KEYS[1], ARGV[1])
for i = 2, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[1], ARGV[i])
  redis.call('SADD', KEYS[1], KEYS[i])
end
return 0`;

/** KEYS: alive, owned. ARGV: pid. A process that shuts down stops counting at once. */
const LEAVE = `${FORGET}
forget(KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 0`;

export function createRedisSocketCaps(options: RedisSocketCapsOptions): SocketCaps {
  const { redis, log } = options;
  const pid = options.processId ?? processId;
  const livenessMs = options.livenessMs ?? DEFAULT_LIVENESS_MS;
  if (!(livenessMs >= 100)) throw new Error(`livenessMs must be at least 100 (got ${livenessMs})`);
  const space = `${options.prefix}caps:${options.name}:`;
  const alive = `${space}alive`;
  const owned = `${space}owned:${pid}`;
  const capKey = (key: string) => `${space}k:${redisKeyOf(key)}`;
  const guard = new RedisGuard(redis, log, `the ${options.name} socket caps`, options.timeoutMs);
  /** This process's open sockets per cap key, admissions in flight included: what Redis must say. */
  const own = new CapCounts();
  /** Redis may disagree with `own` (a call went unanswered): the next heartbeat rewrites. */
  let stale = false;
  /** Rewrites sent so far: an admission refused after one was sent had been written as counted. */
  let rewrites = 0;
  let beating = false;

  // EVAL, not EVALSHA: after Redis restarted, a NOSCRIPT retry would run a script after
  // commands sent later, and the counts rely on Redis running them in the order they were
  // sent (one connection). Redis caches the compiled script either way.
  const run = (script: string, keys: readonly string[], args: readonly (string | number)[]) =>
    guard.attempt(() => redis.eval(script, keys.length, ...keys, ...args));

  async function beat(): Promise<void> {
    if (beating) return;
    beating = true;
    try {
      const known = await run(BEAT, [alive], [pid, livenessMs, `${space}owned:`]);
      if (known === undefined) stale = true;
      else if (known === 0 || stale) await rewrite();
    } finally {
      beating = false;
    }
  }

  async function rewrite(): Promise<void> {
    stale = false;
    rewrites++;
    const counts = [...own.entries()];
    const keys = [owned, ...counts.map(([key]) => capKey(key))];
    if ((await run(REWRITE, keys, [pid, ...counts.map(([, n]) => n)])) === undefined) stale = true;
  }

  function releaseShared(keys: readonly string[]): void {
    void run(RELEASE, [owned, ...keys.map(capKey)], [pid]).then((done) => {
      if (done === undefined) stale = true;
    });
  }

  // Sent before any admission, so this process is alive in Redis before its first socket counts.
  void beat();
  const timer = setInterval(() => void beat(), Math.floor(livenessMs / 3));
  timer.unref();

  return {
    async admit<C extends CapLimit>(caps: readonly C[]): Promise<C | null> {
      if (!caps.length) return null;
      const keys = caps.map((cap) => cap.key);
      // Counted while in flight, so that a rewrite sent meanwhile (which Redis runs after this
      // admission) writes it as counted.
      own.add(keys);
      const sentBefore = rewrites;
      const full = await run(ADMIT, [alive, owned, ...keys.map(capKey)], [pid, ...caps.map((cap) => cap.max)]);
      if (full === 0) return null;
      own.release(keys);
      if (typeof full === 'number' && full > 0) {
        if (rewrites !== sentBefore) releaseShared(keys);
        return caps[full - 1];
      }
      // No answer in time: this process decides alone, and Redis is told its counts later.
      stale = true;
      return own.admit(caps);
    },

    release(keys) {
      if (!keys.length) return;
      own.release(keys);
      releaseShared(keys);
    },

    async close() {
      clearInterval(timer);
      await run(LEAVE, [alive, owned], [pid]);
    },
  };
}
