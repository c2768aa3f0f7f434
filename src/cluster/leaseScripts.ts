/**
 * What every lease in Redis shares (actors' leases in `redisOwnership.ts`, the relay
 * receiver's role in `src/relay/redisRelayReceiver.ts`): a key holding its holder's token,
 * extended and released only by that holder (compare-and-extend, compare-and-delete, in Lua so
 * nothing comes between the compare and the write), and the margin by which a holder stops
 * trusting its lease before Redis lets it expire.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** A Lua script, sent by its SHA1 (`EVALSHA`) once Redis knows it. */
export interface Script {
  source: string;
  sha: string;
}

export function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/** Runs `s` atomically; sends it whole only when Redis does not know it (the first call, or after Redis restarted). */
export async function runScript(redis: Redis, s: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
  try {
    return await redis.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    // NOSCRIPT is the protocol's error prefix for an unknown script.
    if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err;
    return redis.eval(s.source, keys.length, ...keys, ...args);
  }
}

/** KEYS: lease keys; ARGV[1]: lease (ms), ARGV[i + 1]: KEYS[i]'s token. Returns 1 per key extended, 0 per key lost. */
export const EXTEND_LEASES = script(`
local extended = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    extended[i] = 1
  else
    extended[i] = 0
  end
end
return extended`);

/** KEYS[1]: a lease key; ARGV[1]: its token. Deletes it only while it holds that token. */
export const RELEASE_LEASE = script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`);

/**
 * How long a holder trusts a lease of `leaseMs` from when its SET or extension was sent: less
 * than in Redis, so that it stops before Redis lets a successor in. Redlock allows 1% (+2 ms)
 * for clocks running at different rates; 5% also covers a deadline timer firing late (GC, a
 * busy event loop).
 */
export function trustedLeaseMs(leaseMs: number): number {
  return leaseMs - (Math.round(leaseMs * 0.05) + 2);
}
