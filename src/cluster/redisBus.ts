/**
 * The `Bus` over Redis pub/sub, for cluster mode. One connection publishes and one subscribes,
 * so what one process sends (to processes or topics alike) reaches every subscriber in the
 * order it was sent: Redis keeps the order between one publishing and one subscribing
 * connection, and a second connection of either kind would lose it.
 *
 * Channels: `<prefix>p:<process id>` per process, `<prefix>t:<topic>` per topic. A message is
 * the JSON array `[from, body]`; anything else on our channels is dropped with one debug line.
 *
 * Delivery is at most once, as a doorbell's should be (the truth is in PostgreSQL):
 * - a message sent while the publishing connection is down is dropped and counted, not queued,
 *   so a reconnect never releases a burst of stale messages, and a PUBLISH in flight when the
 *   connection broke is not resent (it may have been delivered already);
 * - messages for this process published while its subscribing connection was down are lost;
 *   once the connection is back we subscribe again to every channel ourselves (ioredis'
 *   `autoResubscribe` does resubscribe, but tells nobody when Redis confirmed it).
 * After either connection was lost, the `onReconnect` handlers run once both are back and every
 * channel is subscribed again (`connected()` is true then), so a client asked to resume cannot
 * miss what follows.
 *
 * The hot path (`send`/`publish`, and each received message) allocates nothing beyond the JSON
 * text and what ioredis needs per command, and never awaits.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../observability/logger.ts';
import type { Bus, BusHandler } from './Bus.ts';

export interface RedisBusOptions {
  /** `redis://…` URL of the cluster's Redis. */
  url: string;
  /** `REDIS_PREFIX`: every channel of this bus starts with it. */
  prefix: string;
  /** This process's id (`processId.ts`): names its channel and is the `from` of what it sends. */
  self: string;
  log: Logger;
}

/** Counts since the bus started, for the cluster benchmark (Redis operations per op). */
export interface RedisBusStats {
  /** PUBLISH commands issued. */
  published: number;
  /** Messages received on this process's channel and its topics. */
  received: number;
  /** Messages not published: the publishing connection was down, or the PUBLISH failed. */
  dropped: number;
  /** Received messages that were not `[from, body]` JSON, dropped. */
  malformed: number;
  /** SUBSCRIBE and UNSUBSCRIBE commands issued (first subscribe, last unsubscribe, reconnects). */
  subscriptionCommands: number;
}

export interface RedisBus extends Bus {
  stats(): RedisBusStats;
}

interface Topic {
  /** Each handler with the number of its `subscribe` calls not yet undone. */
  readonly handlers: Map<BusHandler, number>;
  /** Settles when Redis confirmed the SUBSCRIBE; undefined after it failed (the next subscribe retries). */
  confirmed: Promise<void> | undefined;
}

const CONFIRMED = Promise.resolve();

/** Reconnect quickly (50 ms doubling, at most 1 s): a process cut off from the bus is deaf. */
function retryStrategy(attempt: number): number {
  return Math.min(50 * 2 ** (attempt - 1), 1000) + Math.floor(Math.random() * 50);
}

/**
 * Connects both connections and subscribes to this process's channel; resolves once Redis
 * confirmed it, rejects (with both connections closed) when Redis cannot be reached within
 * ioredis' 20 retries (about 17 s).
 */
export async function createRedisBus(options: RedisBusOptions): Promise<RedisBus> {
  // TCP keepalive: a connection that died without a close (a cut network) is noticed, and
  // redialed, instead of leaving this process deaf while it looks connected.
  const common: RedisOptions = { retryStrategy, keepAlive: 10_000 };
  const pub = new Redis(options.url, {
    ...common,
    connectionName: `archety:${options.self}:pub`,
    // At most once: a PUBLISH in flight when the connection broke may have been delivered.
    autoResendUnfulfilledCommands: false,
  });
  const sub = new Redis(options.url, {
    ...common,
    connectionName: `archety:${options.self}:sub`,
    // We resubscribe ourselves, to know when it is done (see the top of the file).
    autoResubscribe: false,
  });
  const bus = new RedisPubSubBus(pub, sub, options);
  try {
    await bus.start();
  } catch (err) {
    await bus.close();
    throw new Error(`the bus could not reach Redis at ${new URL(options.url).host}`, { cause: err });
  }
  return bus;
}

class RedisPubSubBus implements RedisBus {
  readonly self: string;
  private readonly log: Logger;
  /** This process's channel, and the beginnings of other processes' and of topics' channels. */
  private readonly ownChannel: string;
  private readonly processPrefix: string;
  private readonly topicPrefix: string;
  /** `"<self>"`, spliced into every message so that sending builds no array. */
  private readonly fromJson: string;
  private readonly messageHandlers: BusHandler[] = [];
  private readonly reconnectHandlers: (() => void)[] = [];
  /** Topics by channel name, so a received message finds its handlers without slicing. */
  private readonly topics = new Map<string, Topic>();
  private readonly counts: RedisBusStats = {
    published: 0,
    received: 0,
    dropped: 0,
    malformed: 0,
    subscriptionCommands: 0,
  };
  /** False from the subscribing connection's loss until every channel is subscribed again. */
  private subscribed = false;
  private subReadyBefore = false;
  /** A connection was lost since `connected()` was last true: `onReconnect` is due. */
  private down = false;
  private closed = false;

  constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    options: RedisBusOptions,
  ) {
    this.self = options.self;
    this.log = options.log;
    this.processPrefix = `${options.prefix}p:`;
    this.topicPrefix = `${options.prefix}t:`;
    this.ownChannel = this.processPrefix + options.self;
    this.fromJson = JSON.stringify(options.self);
  }

  async start(): Promise<void> {
    this.watch(this.pub, 'pub');
    this.watch(this.sub, 'sub');
    this.sub.on('message', this.onRedisMessage);
    this.sub.on('ready', this.onSubReady);
    this.counts.subscriptionCommands++;
    // Both wait in ioredis' offline queue until their connection is ready.
    await Promise.all([this.pub.ping(), this.sub.subscribe(this.ownChannel)]);
    this.subscribed = true;
    this.down = false;
  }

  send(to: string, message: unknown, unheard?: () => void): void {
    this.write(this.processPrefix + to, message, unheard);
  }

  onMessage(handler: BusHandler): void {
    this.messageHandlers.push(handler);
  }

  publish(topic: string, message: unknown): void {
    this.write(this.topicPrefix + topic, message);
  }

  subscribe(topic: string, handler: BusHandler): Promise<void> {
    const channel = this.topicPrefix + topic;
    let entry = this.topics.get(channel);
    if (!entry) {
      entry = { handlers: new Map(), confirmed: undefined };
      this.topics.set(channel, entry);
    }
    entry.handlers.set(handler, (entry.handlers.get(handler) ?? 0) + 1);
    return entry.confirmed ?? this.confirm(channel, entry);
  }

  unsubscribe(topic: string, handler: BusHandler): void {
    const channel = this.topicPrefix + topic;
    const entry = this.topics.get(channel);
    const count = entry?.handlers.get(handler);
    if (!entry || count === undefined) {
      this.log.warn({ topic }, 'bus: unsubscribe without a matching subscribe, ignored');
      return;
    }
    if (count > 1) {
      entry.handlers.set(handler, count - 1);
      return;
    }
    entry.handlers.delete(handler);
    if (entry.handlers.size > 0) return;
    // Deleted at once: what still arrives before Redis processed the UNSUBSCRIBE finds no topic.
    this.topics.delete(channel);
    if (this.closed) return;
    this.counts.subscriptionCommands++;
    this.sub.unsubscribe(channel, (err) => {
      if (err && !this.closed) this.log.warn({ err, topic }, 'bus: UNSUBSCRIBE failed');
    });
  }

  async present(processes: string[]): Promise<Set<string>> {
    if (!processes.length) return new Set();
    // PUBSUB NUMSUB answers channel, count, channel, count…
    const answer = (await this.pub.call('PUBSUB', 'NUMSUB', ...processes.map((p) => this.processPrefix + p))) as (
      | string
      | number
    )[];
    const present = new Set<string>();
    for (let i = 0; i < processes.length; i++) if (Number(answer[2 * i + 1]) > 0) present.add(processes[i]);
    return present;
  }

  onReconnect(handler: () => void): void {
    this.reconnectHandlers.push(handler);
  }

  connected(): boolean {
    return this.subscribed && this.pub.status === 'ready' && this.sub.status === 'ready';
  }

  stats(): RedisBusStats {
    return { ...this.counts };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.subscribed = false;
    await Promise.all([quit(this.pub), quit(this.sub)]);
  }

  private write(channel: string, message: unknown, unheard?: () => void): void {
    const body = JSON.stringify(message);
    if (body === undefined) throw new TypeError(`a bus message must be a JSON value, not ${typeof message}`);
    if (this.pub.status !== 'ready') {
      this.counts.dropped++;
      unheard?.();
      return;
    }
    this.counts.published++;
    const text = '[' + this.fromJson + ',' + body + ']';
    if (!unheard) {
      this.pub.publish(channel, text, this.onPublished);
      return;
    }
    // PUBLISH answers how many subscribers received it: none means nobody listens there.
    this.pub.publish(channel, text, (err, receivers) => {
      if (err) this.counts.dropped++;
      if (err || !receivers) unheard();
    });
  }

  /** One callback for every PUBLISH: a closure per message would be garbage per message. */
  private readonly onPublished = (err?: Error | null): void => {
    if (err) this.counts.dropped++;
  };

  private confirm(channel: string, entry: Topic): Promise<void> {
    this.counts.subscriptionCommands++;
    const attempt: Promise<void> = this.sub.subscribe(channel).then(
      () => {
        if (entry.confirmed === attempt) entry.confirmed = CONFIRMED;
      },
      (err: unknown) => {
        if (entry.confirmed === attempt) entry.confirmed = undefined;
        throw err;
      },
    );
    entry.confirmed = attempt;
    return attempt;
  }

  private readonly onRedisMessage = (channel: string, raw: string): void => {
    this.counts.received++;
    const topic = channel === this.ownChannel ? undefined : this.topics.get(channel);
    // A topic unsubscribed a moment ago: Redis had not processed the UNSUBSCRIBE yet.
    if (!topic && channel !== this.ownChannel) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      this.malformed(channel, raw, 'not JSON');
      return;
    }
    if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[0] !== 'string') {
      this.malformed(channel, raw, 'not [from, body]');
      return;
    }
    if (topic) {
      for (const handler of topic.handlers.keys()) this.deliver(handler, parsed[1], parsed[0], channel);
    } else {
      for (const handler of this.messageHandlers) this.deliver(handler, parsed[1], parsed[0], channel);
    }
  };

  private malformed(channel: string, raw: string, reason: string): void {
    this.counts.malformed++;
    this.log.debug({ channel, reason, length: raw.length }, 'bus: dropped a malformed message');
  }

  /** A handler that throws must not break the connection's reply parsing, nor the next handler. */
  private deliver(handler: BusHandler, body: unknown, from: string, channel: string): void {
    try {
      handler(body, from);
    } catch (err) {
      this.log.error({ err, channel, from }, 'bus: a message handler threw');
    }
  }

  private readonly onSubReady = (): void => {
    // The first `ready` is the first connection: `start` subscribes then.
    if (!this.subReadyBefore) {
      this.subReadyBefore = true;
      return;
    }
    void this.resubscribe();
  };

  /** Subscribes to every channel again on a new subscribing connection, then tells the handlers. */
  private async resubscribe(): Promise<void> {
    const entries = [...this.topics];
    this.counts.subscriptionCommands++;
    try {
      await this.sub.subscribe(this.ownChannel, ...entries.map(([channel]) => channel));
    } catch (err) {
      // The connection broke again; its next `ready` tries again.
      if (!this.closed) this.log.warn({ err }, 'bus: resubscribing after a reconnect failed');
      return;
    }
    if (this.closed) return;
    for (const [channel, entry] of entries) {
      if (this.topics.get(channel) === entry) entry.confirmed = CONFIRMED;
    }
    this.subscribed = true;
    this.settle();
  }

  /** Runs the `onReconnect` handlers once both connections are back after a loss. */
  private settle(): void {
    if (!this.down || this.closed || !this.connected()) return;
    this.down = false;
    this.log.info({ topics: this.topics.size }, 'bus: reconnected to Redis, subscriptions restored');
    for (const handler of this.reconnectHandlers) {
      try {
        handler();
      } catch (err) {
        this.log.error({ err }, 'bus: a reconnect handler threw');
      }
    }
  }

  /**
   * Logs a connection's loss once (not every failed retry) and marks `onReconnect` due; `pub`
   * coming back may be the last thing missing (`sub`'s return settles after resubscribing).
   */
  private watch(client: Redis, role: 'pub' | 'sub'): void {
    let lost = false;
    client.on('error', (err: Error) => this.log.debug({ err, role }, 'bus: Redis connection error'));
    client.on('close', () => {
      if (role === 'sub') this.subscribed = false;
      if (lost || this.closed) return;
      lost = true;
      this.down = true;
      this.log.warn({ role }, 'bus: lost the connection to Redis, reconnecting');
    });
    client.on('ready', () => {
      lost = false;
      if (role === 'pub') this.settle();
    });
  }
}

/** QUIT when connected (waits for the replies in flight), else just drop the connection. */
async function quit(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  if (client.status !== 'ready') {
    client.disconnect();
    return;
  }
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}
