/**
 * The relay path assembled: the inbox (ingest, its sweep, attempts), the conversations that
 * process its events (a kind on the actor host, with the brain, media and memory), and the
 * outbox that delivers their replies to the relay socket (in a cluster, through the one process
 * that receives: `redisRelayReceiver.ts`). What ties them together lives
 * here: a committed message marks its inbox row processed and queues its reply; a
 * conversation that stopped without passivating has its undelivered events swept again.
 *
 * `start` begins the sweeps (inbox, retention); `stop` ends them (first at shutdown, so no
 * new work starts); `close` releases what is left once the actors are stopped and the
 * commits flushed.
 */
import type { Brain } from '../brain/Brain.ts';
import { createOfflineBrain } from '../brain/offlineBrain.ts';
import { createOpenAIBrain } from '../brain/openaiBrain.ts';
import { createResilience } from '../brain/resilience.ts';
import type { Cluster } from '../cluster/connectCluster.ts';
import type { Config } from '../config.ts';
import { createConversationKind } from '../conversation/createConversationKind.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import { redisRateLimiters } from '../limits/createRedisRateLimiter.ts';
import { localRateLimiters, type RateLimiterFactory } from '../limits/RateLimiter.ts';
import { MemoryStore } from '../memory/MemoryStore.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { ConversationRepository } from '../store/conversationRepository.ts';
import type { GroupCommitter } from '../store/GroupCommitter.ts';
import type { Pool } from '../store/pool.ts';
import { RelayRepository } from '../store/relayRepository.ts';
import { createMediaFetcher } from './fetchMedia.ts';
import { OutboxDispatcher } from './OutboxDispatcher.ts';
import { RelayIngest } from './RelayIngest.ts';
import { localRelayReceiver } from './RelayReceiver.ts';
import { createRedisRelayReceiver } from './redisRelayReceiver.ts';
import { limitsFrom, relayEventSchema } from './relayEvent.ts';
import { startRelayRetention } from './relayRetention.ts';

export interface RelayDeps {
  config: Readonly<Config>;
  pool: Pool;
  committer: GroupCommitter;
  host: ActorHost;
  metrics: Metrics;
  log: Logger;
  /** Cluster mode: one process of the cluster delivers the sends; the others ring it. */
  cluster?: Pick<Cluster, 'redis' | 'bus' | 'prefix'>;
}

export function createRelay({ config, pool, committer, host, metrics, log, cluster }: RelayDeps) {
  const brain: Brain = config.openai.apiKey
    ? createOpenAIBrain(config.openai, config.photoLateMs, log)
    : createOfflineBrain();
  const media = createResilience({
    name: 'media',
    // A fetch may go on past PHOTO_WAIT_MS for a photo looked at late; the caller's signal bounds it.
    timeoutMs: config.photoLateMs,
    attempts: 2,
    breakerFailures: config.openai.breakerFailures,
    halfOpenAfterMs: config.openai.breakerHalfOpenMs,
    log,
  });
  const repo = new RelayRepository(pool);
  const conversations = new ConversationRepository(pool);
  const outbox = new OutboxDispatcher(
    repo,
    committer,
    {
      redeliverMs: config.relay.redeliverMs,
      window: config.relay.sendWindow,
      // Half of what drops a socket as a slow consumer: room for the frames written before a check.
      highWaterBytes: Math.floor(config.ws.maxBackpressureBytes / 2),
    },
    metrics,
    log,
    cluster
      ? createRedisRelayReceiver({
          redis: cluster.redis,
          bus: cluster.bus,
          prefix: cluster.prefix,
          leaseMs: config.actorLeaseMs,
          log,
        })
      : localRelayReceiver,
  );
  // Cluster mode counts the budgets in Redis, for every process together.
  const limiters: RateLimiterFactory = cluster
    ? redisRateLimiters({ redis: cluster.redis, prefix: cluster.prefix, log })
    : localRateLimiters;
  const senders = limiters('senders', config.relay.senderPerMinute / 60, config.relay.senderBurst);
  /** Events per relay token (the HTTP route and the socket share it). */
  const relays = limiters('relays', config.relay.eventsPerSecond, config.relay.eventsBurst);
  const ingest = new RelayIngest({
    committer,
    repo,
    host,
    schema: relayEventSchema(limitsFrom(config)),
    senders,
    metrics,
    log,
    sweepEveryMs: config.relay.inboxSweepMs,
    maxAttempts: config.relay.maxAttempts,
    retryBackoffMs: config.relay.retryBackoffMs,
    window: config.relay.processingWindow,
    batchEvents: config.relay.batchEvents,
    backlogMax: config.relay.backlogMax,
    heldBytesMax: config.relay.backlogHeldBytes,
    owing: (olderThanMs, limit) => conversations.owing(olderThanMs, limit),
    burstQuietMs: config.relay.burstQuietMs,
  });
  host.register(
    createConversationKind({
      repo: conversations,
      memory: new MemoryStore(pool),
      brain,
      committer,
      fetchMedia: createMediaFetcher(config.relay.mediaHosts, config.limits.maxAttachmentBytes),
      media,
      photoWaitMs: config.photoWaitMs,
      photoLateMs: config.photoLateMs,
      onCommitted: (commit, applied) => {
        if (commit.inboxSeq !== null) ingest.processed(commit.inboxSeq);
        if (applied && commit.send) outbox.enqueue(commit.send);
      },
      onSkipped: (seq) => ingest.processed(seq),
      onFailed: (key, blame) => ingest.conversationFailed(key, blame),
      burstQuietMs: config.relay.burstQuietMs,
      batchCommitMs: config.relay.batchCommitMs,
      metrics,
      log,
    }),
  );

  let stopRetention = () => {};
  return {
    ingest,
    outbox,
    relays,
    conversations,
    brainMode: brain.mode,
    /** The circuit breakers of the relay path (0 closed, 1 open, 2 half-open), for /metrics. */
    breakers: (): Record<string, number> => ({
      ...('breakers' in brain ? (brain.breakers as () => Record<string, number>)() : {}),
      media: media.state(),
    }),
    start(): void {
      stopRetention = startRelayRetention(repo, config.relay, log);
      ingest.start();
    },
    stop(): void {
      stopRetention();
      ingest.stop();
    },
    close(): void {
      outbox.close();
      senders.close();
      relays.close();
    },
  };
}

export type Relay = ReturnType<typeof createRelay>;
