/**
 * The relay's receiver in a cluster (`RelayReceiver.ts`): exactly one process delivers the
 * sends, the one whose relay socket connected last, as on one node where the newest socket
 * receives. The role is a Redis key, `<prefix>relay:receiver` = `<process id> <epoch>`:
 *
 * - a relay socket connecting claims it unconditionally, with a new epoch (one counter,
 *   `<prefix>relay:receiver:epoch`), and says so on the bus; a process that hears of a newer
 *   epoch than its own claim stops delivering. Epochs order the claims as Redis ran them, so
 *   processes that claimed at once agree on the one that won whatever order they heard it in;
 * - its holder extends it every `leaseMs / 3` while it holds relay sockets, and stops delivering
 *   when Redis says it is no longer its own, or when no extension succeeded within the part of
 *   `leaseMs` it trusts (`trustedLeaseMs`, as for actors' leases: cut off from Redis, or
 *   paused): another process may have taken it by then;
 * - when the holder's last relay socket closes it deletes the key and says so; a process with a
 *   relay socket then takes the role, if nobody did first. A process that died loses it when the
 *   key expires (`leaseMs`): a process with a relay socket takes it at its next timer.
 *
 * Other processes, when they commit a reply, ring the receiver (a bus message to its process):
 * it reads the outbox. The doorbell, like every bus message, may be lost: the reply then waits
 * for the receiver's next periodic pass over the outbox (`OutboxDispatcher`). A hand-over may
 * let both processes deliver for a moment: a send then reaches two sockets with the same `id`,
 * which the protocol allows (redelivered until acknowledged); none is ever skipped, because a
 * new receiver reads every unacknowledged send again.
 */
import type { Redis } from 'ioredis';
import type { Bus, BusHandler } from '../cluster/Bus.ts';
import { EXTEND_LEASES, RELEASE_LEASE, runScript, trustedLeaseMs } from '../cluster/leaseScripts.ts';
import type { Logger } from '../observability/logger.ts';
import type { ReceiverEvents, RelayReceiver } from './RelayReceiver.ts';

export interface RedisRelayReceiverOptions {
  redis: Redis;
  bus: Bus;
  /** `REDIS_PREFIX`: every key and topic starts with it. */
  prefix: string;
  /** `ACTOR_LEASE_MS`: the role lapses this long (ms) after its holder last extended it. */
  leaseMs: number;
  log: Logger;
}

type ReceiverMessage = { t: 'r.claimed'; epoch: number } | { t: 'r.released' } | { t: 'r.ring' };

/** The bus topic every process hears claims and releases on. */
const TOPIC = 'relay:receiver';

/**
 * KEYS[1]: the role, KEYS[2]: the epoch counter; ARGV: process id, lease (ms), '1' to claim
 * only a free role. Returns the new epoch, or nil when the role was not free.
 */
const CLAIM = `
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return epoch`;

export function createRedisRelayReceiver({
  redis,
  bus,
  prefix,
  leaseMs,
  log,
}: RedisRelayReceiverOptions): RelayReceiver {
  const self = bus.self;
  const key = `${prefix}relay:receiver`;
  const epochKey = `${prefix}relay:receiver:epoch`;
  let events: ReceiverEvents = { changed() {}, rung() {} };
  /** Relay sockets open here. */
  let sockets = 0;
  /** The key's value while this process holds the role (`<process id> <epoch>`), else null. */
  let held: string | null = null;
  /** `performance.now()` (ms) by which an extension must succeed, or the role is given up. */
  let deadline = 0;
  /** The newest epoch heard of, here or elsewhere: an older claim answered late is not taken. */
  let newest = 0;
  /** The process that receives, as last heard (null: ask Redis when a reply needs it). */
  let receiver: string | null = null;
  let ringing = false;
  let closed = false;

  function take(value: string, epoch: number, sentAt: number): void {
    const was = held !== null;
    held = value;
    newest = epoch;
    receiver = self;
    deadline = sentAt + trustedLeaseMs(leaseMs);
    if (!was) events.changed();
  }

  function drop(): void {
    if (held === null) return;
    held = null;
    events.changed();
  }

  async function claim(onlyIfFree: boolean): Promise<void> {
    const sentAt = performance.now();
    let epoch: number | null;
    try {
      epoch = (await redis.eval(CLAIM, 2, key, epochKey, self, leaseMs, onlyIfFree ? '1' : '0')) as number | null;
    } catch (err) {
      // Claimed again at the next timer while relay sockets are open here.
      log.warn({ err }, 'relay: could not claim the delivery of sends (Redis)');
      return;
    }
    if (epoch === null) return;
    const value = `${self} ${epoch}`;
    if (closed || sockets === 0) return release(value);
    // A newer claim was heard meanwhile: it overwrote this one.
    if (epoch < newest) return;
    take(value, epoch, sentAt);
    bus.publish(TOPIC, { t: 'r.claimed', epoch } satisfies ReceiverMessage);
  }

  async function release(value: string): Promise<void> {
    if (receiver === self) receiver = null;
    try {
      await runScript(redis, RELEASE_LEASE, [key], [value]);
    } catch (err) {
      // It expires after leaseMs; a process with a relay socket takes it then.
      log.warn({ err }, 'relay: could not hand over the delivery of sends (Redis)');
      return;
    }
    bus.publish(TOPIC, { t: 'r.released' } satisfies ReceiverMessage);
  }

  /** Extends the role while held; takes it when it is free and relay sockets are open here. */
  async function renew(): Promise<void> {
    if (held === null) {
      if (sockets > 0 && !closed) await claim(true);
      return;
    }
    const value = held;
    const sentAt = performance.now();
    let extended: boolean;
    try {
      extended = ((await runScript(redis, EXTEND_LEASES, [key], [leaseMs, value])) as number[])[0] === 1;
    } catch (err) {
      if (held === value && performance.now() > deadline) {
        log.warn({ err }, 'relay: could not keep the delivery of sends (Redis); another process may take it');
        drop();
      }
      return;
    }
    if (held !== value) return;
    if (extended) {
      deadline = sentAt + trustedLeaseMs(leaseMs);
      return;
    }
    // Taken by a newer relay socket elsewhere (its claim was not heard), or expired while paused.
    receiver = null;
    drop();
    if (sockets > 0 && !closed) await claim(true);
  }

  const timer = setInterval(() => void renew(), Math.floor(leaseMs / 3));
  timer.unref();

  const onTopic: BusHandler = (raw, from) => {
    if (closed || from === self) return;
    const message = raw as ReceiverMessage;
    if (message?.t === 'r.claimed' && typeof message.epoch === 'number') {
      if (message.epoch <= newest) return;
      newest = message.epoch;
      receiver = from;
      drop();
    } else if (message?.t === 'r.released') {
      if (receiver === from) receiver = null;
      if (sockets > 0 && held === null) void claim(true);
    }
  };
  bus.subscribe(TOPIC, onTopic).catch((err) => {
    // The subscription is made again on reconnect; meanwhile the timer finds what was missed.
    log.warn({ err }, 'relay: could not subscribe to the receiver topic yet');
  });
  bus.onMessage((raw) => {
    if ((raw as ReceiverMessage)?.t === 'r.ring' && held !== null && !closed) events.rung();
  });
  // Claims and releases may have been missed meanwhile.
  bus.onReconnect(() => {
    receiver = null;
    void renew();
  });

  /** The receiving process, from Redis; null when no relay is connected anywhere or Redis did not answer. */
  async function lookUp(): Promise<string | null> {
    try {
      const value = await redis.get(key);
      receiver ??= value ? value.slice(0, value.indexOf(' ')) : null;
    } catch (err) {
      log.debug({ err }, 'relay: could not look up the receiving process');
    }
    return receiver;
  }

  async function doorbell(): Promise<void> {
    if (held !== null) return events.rung();
    const to = receiver ?? (await lookUp());
    if (!to || to === self) return;
    bus.send(to, { t: 'r.ring' } satisfies ReceiverMessage, () => {
      // Nobody listens there (it died): the next reply looks the receiver up again.
      if (receiver === to) receiver = null;
    });
  }

  return {
    shared: true,
    receiving: () => held !== null,
    connected(count) {
      sockets = count;
      void claim(false);
    },
    disconnected(count) {
      sockets = count;
      if (count > 0 || held === null) return;
      const value = held;
      drop();
      void release(value);
    },
    ring() {
      // Replies committed together (one group commit) ring once.
      if (ringing || closed) return;
      ringing = true;
      setImmediate(() => {
        ringing = false;
        void doorbell();
      });
    },
    listen(handlers) {
      events = handlers;
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      bus.unsubscribe(TOPIC, onTopic);
      if (held === null) return;
      const value = held;
      held = null;
      void release(value);
    },
  };
}
