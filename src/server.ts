/**
 * Assembles one Archety server process: database (external or embedded), migrations, the
 * actor host with its kinds, HTTP routes and WebSocket endpoints on uWebSockets.js; and its
 * graceful shutdown.
 */
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import { MAX_STALE_VERSIONS } from '../actors/miniappSession.ts';
import { resolveJwtKey } from './auth/jwtKey.ts';
import { createVerifier } from './auth/verifyToken.ts';
import { createOfflineBrain } from './brain/offlineBrain.ts';
import { createOpenAIBrain } from './brain/openaiBrain.ts';
import { createResilience } from './brain/resilience.ts';
import type { Config } from './config.ts';
import { createConversationKind } from './conversation/createConversationKind.ts';
import { CloseCodes } from './errors.ts';
import { createActorHost } from './host/createActorHost.ts';
import { localOwnership } from './host/localOwnership.ts';
import { createLocalRateLimiter } from './limits/RateLimiter.ts';
import { MemoryStore } from './memory/MemoryStore.ts';
import { createMiniappKind } from './miniapp/createMiniappKind.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createMetrics } from './observability/metrics.ts';
import { createMediaFetcher } from './relay/fetchMedia.ts';
import { OutboxDispatcher } from './relay/OutboxDispatcher.ts';
import { RelayIngest } from './relay/RelayIngest.ts';
import { limitsFrom, relayEventSchema } from './relay/relayEvent.ts';
import { startRelayRetention } from './relay/relayRetention.ts';
import { ConversationRepository } from './store/conversationRepository.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './store/embeddedPostgres.ts';
import { GroupCommitter } from './store/GroupCommitter.ts';
import { leaseEpochs } from './store/leases.ts';
import { migrate } from './store/migrate.ts';
import { MiniappRepository } from './store/miniappRepository.ts';
import { createPool, type Pool, poolStats } from './store/pool.ts';
import { RelayRepository } from './store/relayRepository.ts';
import { registerAdminRoutes } from './transport/adminRoutes.ts';
import { createRouter } from './transport/http.ts';
import { loadUws } from './transport/loadUws.ts';
import { registerMiniappRoutes } from './transport/miniappRoutes.ts';
import { MiniappSockets, registerMiniappSocket } from './transport/miniappSocket.ts';
import { registerOpsRoutes } from './transport/opsRoutes.ts';
import { registerRelayRoutes } from './transport/relayRoutes.ts';
import { registerRelaySocket } from './transport/relaySocket.ts';
import { loadMiniappPage } from './web/miniappPage.ts';

export interface RunningServer {
  url: string;
  port: number;
  /** Where `/metrics` is served (on `url` unless METRICS_PORT is set). */
  metricsUrl: string;
  mode: 'single' | 'cluster';
  databaseUrl: string;
  pool: Pool;
  log: Logger;
  /** Graceful shutdown: stop accepting, flush commits, passivate actors, close sockets (1001), end the pool. */
  close(): Promise<void>;
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(invalid url)';
  }
}

export async function startServer(config: Readonly<Config>, options: { log?: Logger } = {}): Promise<RunningServer> {
  const log =
    options.log ?? createLogger({ level: config.logLevel, format: config.logFormat, base: { node: config.nodeId } });
  const { uws, native, reason } = loadUws(config.allowUwsFallback);
  if (!native) log.warn({ reason }, 'running on the slow pure-JS uWebSockets.js fallback (ALLOW_UWS_FALLBACK=1)');
  const jwtKey = await resolveJwtKey(config);
  if (config.redisUrl) log.warn('REDIS_URL is set, but cluster mode is not available yet: running single-node');
  const mode = 'single' as const;

  const embedded: EmbeddedPostgres | undefined = config.databaseUrl
    ? undefined
    : await startEmbeddedPostgres(config.dataDir, config.embeddedPgPort, log);
  const databaseUrl = config.databaseUrl ?? (embedded as EmbeddedPostgres).url;
  const pool = createPool(databaseUrl, config.pg, log);
  try {
    await migrate(pool, log);
  } catch (err) {
    await pool.end();
    await embedded?.stop();
    throw err;
  }

  const verify = createVerifier({
    key: 'secret' in jwtKey ? { secret: jwtKey.secret } : { jwksUrl: jwtKey.jwksUrl },
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
    clockToleranceS: config.jwt.clockToleranceS,
  });
  let socketCounts = () => ({ miniapp: 0, relay: 0 });
  const metrics = createMetrics({
    pool: () => poolStats(pool),
    actors: () => host.counts(),
    sockets: () => socketCounts(),
    breakers: () => ({
      ...('breakers' in brain ? (brain.breakers as () => Record<string, number>)() : {}),
      media: media.state(),
    }),
    relaySendsInMemory: () => outbox.pending(),
  });
  const sockets = new MiniappSockets();
  const committer = new GroupCommitter(pool, { ...config.groupCommit, log, metrics });
  const host = createActorHost({
    bumpEpoch: leaseEpochs(committer, config.nodeId),
    ownership: localOwnership,
    idleMs: config.actorIdleMs,
    maxActivations: config.actorMaxActivations,
    log,
  });
  const brain = config.openai.apiKey ? createOpenAIBrain(config.openai, config.photoLateMs, log) : createOfflineBrain();
  const media = createResilience({
    name: 'media',
    // A fetch may go on past PHOTO_WAIT_MS for a photo looked at late; the caller's signal bounds it.
    timeoutMs: config.photoLateMs,
    attempts: 2,
    breakerFailures: config.openai.breakerFailures,
    halfOpenAfterMs: config.openai.breakerHalfOpenMs,
    log,
  });
  const repo = new MiniappRepository(pool);
  host.register(createMiniappKind({ repo, committer, channel: sockets, metrics, log }));

  const relayRepo = new RelayRepository(pool);
  const conversations = new ConversationRepository(pool);
  const outbox = new OutboxDispatcher(
    relayRepo,
    committer,
    {
      redeliverMs: config.relay.redeliverMs,
      window: config.relay.sendWindow,
      // Half of what drops a socket as a slow consumer: room for the frames written before a check.
      highWaterBytes: Math.floor(config.ws.maxBackpressureBytes / 2),
    },
    metrics,
    log,
  );
  const senders = createLocalRateLimiter(config.relay.senderPerMinute / 60, config.relay.senderBurst);
  const relays = createLocalRateLimiter(config.relay.eventsPerSecond, config.relay.eventsBurst);
  const ingest = new RelayIngest({
    committer,
    repo: relayRepo,
    host,
    schema: relayEventSchema(limitsFrom(config)),
    senders,
    metrics,
    log,
    sweepEveryMs: config.relay.inboxSweepMs,
    maxAttempts: config.relay.maxAttempts,
    retryBackoffMs: config.relay.retryBackoffMs,
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
      onFailed: (key) => ingest.conversationFailed(key),
      burstQuietMs: config.relay.burstQuietMs,
      metrics,
      log,
    }),
  );

  const app = uws.App();
  sockets.bind(app);
  let accepting = true;
  const router = createRouter({
    app,
    log,
    metrics,
    maxBodyBytes: config.limits.maxBodyBytes,
    limits: config.limits,
  });
  // With METRICS_PORT, /metrics has a listener of its own (bind it where only Prometheus reaches).
  const metricsApp = config.metrics ? uws.App() : null;
  const metricsRouter = metricsApp ? createRouter({ app: metricsApp, log, metrics, maxBodyBytes: 0 }) : router;
  registerOpsRoutes({
    router,
    metricsRouter,
    pool,
    host,
    metrics,
    nodeId: config.nodeId,
    mode,
    accepting: () => accepting,
  });
  registerMiniappRoutes({ router, verify, repo, host, metrics, page: await loadMiniappPage() });
  registerRelayRoutes({ router, verify, ingest, relays, conversations, metrics });
  registerAdminRoutes({ router, verify, ingest, metrics });
  const miniappEndpoint = registerMiniappSocket({ app, config, verify, repo, host, metrics, log }, sockets);
  const relayEndpoint = registerRelaySocket({ app, config, verify, ingest, outbox, relays, metrics, log });
  socketCounts = () => ({ miniapp: miniappEndpoint.count(), relay: relayEndpoint.count() });
  router.fallback();
  if (metricsApp) metricsRouter.fallback();

  const listen = (on: TemplatedApp, host: string, port: number) =>
    new Promise<{ socket: us_listen_socket; url: string }>((resolve, reject) => {
      on.listen(host, port, (socket) => {
        if (!socket) return reject(new Error(`cannot listen on ${host}:${port}`));
        const bound = uws.us_socket_local_port(socket as never);
        resolve({ socket, url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}` });
      });
    });
  const { socket: listenSocket, url } = await listen(app, config.host, config.port);
  const port = uws.us_socket_local_port(listenSocket as never);
  const metricsListener =
    metricsApp && config.metrics ? await listen(metricsApp, config.metrics.host, config.metrics.port) : undefined;
  const metricsUrl = `${metricsListener?.url ?? url}/metrics`;

  const prune = setInterval(() => {
    repo
      // A session's last MAX_STALE_VERSIONS ops stay whatever their age: a stale op is checked against them.
      .pruneOps(config.ops.retentionHours, MAX_STALE_VERSIONS)
      .then((n) => n && log.info({ deleted: n }, 'pruned old miniapp ops'))
      .catch((err) => log.warn({ err }, 'pruning miniapp ops failed'));
  }, config.ops.pruneEveryMs);
  prune.unref();
  const stopRelayRetention = startRelayRetention(relayRepo, config.relay, log);
  ingest.start();

  log.info(
    {
      mode,
      url,
      database: embedded ? 'embedded' : redactUrl(databaseUrl),
      dataDir: embedded ? embedded.dataDir : undefined,
      redis: config.redisUrl ? redactUrl(config.redisUrl) : 'none',
      jwt: jwtKey.source,
      brain: brain.mode,
      metrics: metricsUrl,
    },
    `archety listening on ${url} (mode ${mode}, database ${embedded ? `embedded in ${embedded.dataDir}` : redactUrl(databaseUrl)}, redis ${config.redisUrl ? redactUrl(config.redisUrl) : 'none'}, brain ${brain.mode}, metrics ${metricsUrl})`,
  );

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    const started = Date.now();
    accepting = false;
    clearInterval(prune);
    stopRelayRetention();
    ingest.stop();
    uws.us_listen_socket_close(listenSocket);
    if (metricsListener) uws.us_listen_socket_close(metricsListener.socket);
    // Passivation waits for every pending commit (its checkpoint is queued after them), so
    // `applied` frames still reach the open sockets before they are closed.
    await host.stopAll(config.shutdownTimeoutMs);
    await Promise.all([
      miniappEndpoint.closeAll(CloseCodes.goingAway, 'server shutting down'),
      relayEndpoint.closeAll(CloseCodes.goingAway, 'server shutting down'),
    ]);
    await committer.flush();
    committer.close();
    outbox.close();
    senders.close();
    relays.close();
    await pool.end();
    await embedded?.stop();
    log.info({ ms: Date.now() - started }, 'shutdown complete');
  }

  return {
    url,
    port,
    metricsUrl,
    mode,
    databaseUrl,
    pool,
    log,
    close: () => (closing ??= close()),
  };
}
