/**
 * Cluster-mode `Ownership` (`src/host/Ownership.ts`): one lease per live actor in one Redis,
 * the single-instance form of the Redlock algorithm — take with `SET NX PX` and a value unique
 * to this acquisition, extend and release only while the key still holds that value (Lua,
 * atomic) — so a process that lost a lease can never extend or delete its successor's.
 *
 * One key per actor: `<prefix>actor:<actor key>` = `<process id>:<n>` (n counts this process's
 * acquisitions). The value is both the unique token and the owner's name, so `ownerOf` is one
 * GET and acquiring, extending and releasing each touch one key. (`@sesamecare-oss/redlock`
 * works with ioredis 6, but its value is random, so the owner would need a second key written
 * in a second step, which a pause between the two can leave naming a lost holder; and it
 * extends one lock per command, where one script here extends a batch.)
 *
 * Guarantees:
 * - `acquire` answers false at once while another acquisition holds the key (no waiting).
 * - Every lease this process holds is extended by one timer every `leaseMs / 3`, all of them in
 *   one script call per `EXTEND_BATCH` leases: never per op.
 * - A lease is LOST, dropped here and told to every `onLost` listener exactly once, when Redis
 *   refuses its extension (its key expired or holds another value), or when no extension
 *   succeeded before its local deadline (Redis unreachable or slow, or this process paused past
 *   it). The local deadline is counted from when the last successful extension was SENT, less
 *   a margin (5%), so it falls before Redis lets another process take the key: the holder
 *   stops before a successor can start.
 *
 * Redis commands, with the default `ACTOR_LEASE_MS` of 10 s: per actor, 1 `SET` to acquire and
 * 1 script call to release; while it lives, 18 extensions a minute, each a GET and a PEXPIRE
 * inside a script call shared with up to 499 other leases (so a process holding N ≤ 500 actors
 * sends 18 calls a minute in all: 18/N per actor). `ownerOf` is one GET, none for an actor
 * held here.
 */
import type { Redis } from 'ioredis';
import { AppError } from '../errors.ts';
import type { Ownership } from '../host/Ownership.ts';
import { type Logger, maskPhones } from '../observability/logger.ts';
import { EXTEND_LEASES, RELEASE_LEASE, runScript, trustedLeaseMs } from './leaseScripts.ts';

export interface RedisOwnershipOptions {
  redis: Redis;
  /** `REDIS_PREFIX`: every key starts with it. */
  prefix: string;
  /** `ACTOR_LEASE_MS`: how long (ms) a lease lasts unless extended; an integer ≥ 1000. */
  leaseMs: number;
  /** This process's id (`processId.ts`): what `ownerOf` answers for the actors it holds. */
  self: string;
  log: Logger;
}

/** Counts since the ownership started, for the cluster benchmark (Redis operations per op). */
export interface RedisOwnershipStats {
  /** Leases held now. */
  held: number;
  acquired: number;
  /**
   * Acquisitions refused: another process (or an older acquisition of this one) held the key,
   * or Redis' answer came after the lease would have ended.
   */
  refused: number;
  released: number;
  lost: number;
  /** Extension script calls sent (each covers up to `EXTEND_BATCH` leases). */
  extendCalls: number;
  /** Leases Redis refused to extend (expired, or taken by another process), held here still or not. */
  extendRefused: number;
}

export interface RedisOwnership extends Ownership {
  /** The process holding each of `keys` now (null: none), in one read. */
  holders(keys: string[]): Promise<(string | null)[]>;
  stats(): RedisOwnershipStats;
}

/** Leases extended by one script call at most: Redis runs a script alone, so a batch must stay short (≈1 ms). */
export const EXTEND_BATCH = 500;

/** At least this long (ms): extensions every third of it must fit between Redis round trips and timer delays. */
export const MIN_LEASE_MS = 1000;

interface Lease {
  token: string;
  /** `performance.now()` (ms) by which an extension must have succeeded, or the lease is lost. */
  expiresAt: number;
}

/** The process named in a lease's value (`<process id>:<n>`). */
function ownerOfToken(token: string): string {
  const colon = token.lastIndexOf(':');
  return colon < 0 ? token : token.slice(0, colon);
}

function unreachable(err: unknown): never {
  throw new AppError('session_unavailable', 'Redis failed to answer about actor ownership; retry', { cause: err });
}

export function createRedisOwnership(options: RedisOwnershipOptions): RedisOwnership {
  const { redis, leaseMs, self, log } = options;
  if (!Number.isInteger(leaseMs) || leaseMs < MIN_LEASE_MS) {
    throw new Error(`leaseMs must be an integer of at least ${MIN_LEASE_MS} ms, got ${leaseMs}`);
  }
  const keyPrefix = `${options.prefix}actor:`;
  const extendEveryMs = Math.floor(leaseMs / 3);
  // How long a lease is trusted here from when its SET or extension was sent: less than in Redis.
  const trustedMs = trustedLeaseMs(leaseMs);
  const leases = new Map<string, Lease>();
  const listeners: ((key: string) => void)[] = [];
  const counts = { acquired: 0, refused: 0, released: 0, lost: 0, extendCalls: 0, extendRefused: 0 };
  /** Numbers this process's acquisitions, so each lease's value is unique. */
  let acquisitions = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  /** True from a failed extension call to the next one that succeeds: one log line per outage. */
  let failing = false;

  /** Drops `lease` if it is still held and tells the listeners; false when it was not held. */
  function lose(key: string, lease: Lease): boolean {
    if (leases.get(key) !== lease) return false;
    leases.delete(key);
    counts.lost++;
    for (const listener of listeners) {
      try {
        listener(key);
      } catch (err) {
        log.error({ err, actor: maskPhones(key) }, 'an onLost listener threw');
      }
    }
    return true;
  }

  /** One line for all the leases lost at once (an outage loses every lease together). */
  function reportLost(keys: string[], why: string): void {
    if (keys.length === 0) return;
    log.warn({ count: keys.length, actors: keys.slice(0, 10).map(maskPhones), why }, 'actor leases lost');
  }

  /**
   * The one timer: every `extendEveryMs`, or sooner when a lease's deadline comes first (after
   * failed extensions), so a lease is declared lost at its deadline, not up to a period late.
   */
  function schedule(): void {
    if (closed || timer || leases.size === 0) return;
    const now = performance.now();
    let next = now + extendEveryMs;
    for (const lease of leases.values()) next = Math.min(next, lease.expiresAt);
    timer = setTimeout(tick, Math.max(0, next - now));
    timer.unref();
  }

  function tick(): void {
    timer = undefined;
    if (closed) return;
    const now = performance.now();
    const lost: string[] = [];
    for (const [key, lease] of leases) {
      if (lease.expiresAt <= now && lose(key, lease)) lost.push(key);
    }
    reportLost(lost, 'not extended before their deadline (Redis unreachable or slow, or this process was paused)');
    const held = [...leases];
    for (let i = 0; i < held.length; i += EXTEND_BATCH) void extend(held.slice(i, i + EXTEND_BATCH));
    schedule();
  }

  /**
   * Extends `batch`. Calls from successive ticks may overlap (a slow Redis): each answer is
   * right whenever it comes, since a key that once stopped holding a token never holds it again.
   */
  async function extend(batch: [string, Lease][]): Promise<void> {
    const sentAt = performance.now();
    counts.extendCalls++;
    let answers: unknown;
    try {
      answers = await runScript(
        redis,
        EXTEND_LEASES,
        batch.map(([key]) => keyPrefix + key),
        [leaseMs, ...batch.map(([, lease]) => lease.token)],
      );
      if (!Array.isArray(answers) || answers.length !== batch.length) {
        throw new Error(`unexpected answer to the lease extension: ${JSON.stringify(answers)}`);
      }
    } catch (err) {
      // The leases keep their deadlines: the next ticks try again, and a deadline that passes first loses its lease.
      if (!failing && !closed) log.warn({ err, leases: batch.length }, 'actor leases could not be extended; retrying');
      failing = true;
      return;
    }
    if (failing) log.info('actor leases are being extended again');
    failing = false;
    const extendedUntil = sentAt + trustedMs;
    const lost: string[] = [];
    for (const [i, [key, lease]] of batch.entries()) {
      if (answers[i] !== 1) {
        counts.extendRefused++;
        if (lose(key, lease)) lost.push(key);
      } else if (leases.get(key) === lease) {
        lease.expiresAt = Math.max(lease.expiresAt, extendedUntil);
      }
    }
    reportLost(lost, 'Redis refused to extend them: expired there, or taken by another process');
  }

  return {
    async acquire(key) {
      if (closed) throw new Error('the Redis ownership is closed');
      const token = `${self}:${++acquisitions}`;
      const sentAt = performance.now();
      const answer = await redis.set(keyPrefix + key, token, 'PX', leaseMs, 'NX').catch((err) => {
        // A SET that broke with the connection may still have taken the key: free it if so,
        // or the actor waits a whole lease for a holder that never knew it held it.
        runScript(redis, RELEASE_LEASE, [keyPrefix + key], [token]).catch(() => undefined);
        return unreachable(err);
      });
      if (answer !== 'OK') {
        counts.refused++;
        return false;
      }
      const lease = { token, expiresAt: sentAt + trustedMs };
      // Paused between asking and hearing back for longer than the lease: someone else may hold it now.
      if (closed || performance.now() >= lease.expiresAt) {
        counts.refused++;
        // Frees the key at once if it is still ours; if this fails, it expires by itself.
        runScript(redis, RELEASE_LEASE, [keyPrefix + key], [token]).catch(() => undefined);
        return false;
      }
      counts.acquired++;
      leases.set(key, lease);
      schedule();
      return true;
    },

    async release(key) {
      const lease = leases.get(key);
      if (!lease) return;
      leases.delete(key);
      counts.released++;
      await runScript(redis, RELEASE_LEASE, [keyPrefix + key], [lease.token]);
    },

    async holders(keys) {
      if (!keys.length) return [];
      const tokens = await redis.mget(...keys.map((key) => keyPrefix + key)).catch(unreachable);
      return tokens.map((token) => (token === null ? null : ownerOfToken(token)));
    },

    async ownerOf(key) {
      if (leases.has(key)) return self;
      const token = await redis.get(keyPrefix + key).catch(unreachable);
      return token === null ? null : ownerOfToken(token);
    },

    onLost(listener) {
      listeners.push(listener);
    },

    async close() {
      closed = true;
      clearTimeout(timer);
      timer = undefined;
      // What is still held expires in Redis: an actor still running here must not be taken over early.
      leases.clear();
    },

    stats() {
      return { held: leases.size, ...counts };
    },
  };
}
