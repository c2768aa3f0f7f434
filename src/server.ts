/**
 * Assembles one Archety server process, in steps: the database (external or embedded, with
 * migrations: `openDatabase`), the actors and what they stand on (group commit, host, miniapp
 * service, relay: `createActors`), HTTP routes and WebSocket endpoints on uWebSockets.js
 * (`createTransport`), and the listeners. `close` undoes them in reverse for a graceful
 * shutdown; a start that fails part way (a port in use) undoes what it had done.
 */
import type { TemplatedApp, us_listen_socket, us_socket } from 'uWebSockets.js';
import { MAX_STALE_VERSIONS } from '../actors/miniappSession.ts';
import type { JwtKey } from './auth/jwtKey.ts';
import { resolveJwtKey } from './auth/jwtKey.ts';
import { createVerifier } from './auth/verifyToken.ts';
import { createClusterChannel } from './cluster/clusterChannel.ts';
import { type Cluster, connectCluster } from './cluster/connectCluster.ts';
import { createRoutedHost } from './cluster/routedHost.ts';
import type { Config } from './config.ts';
import { CloseCodes } from './errors.ts';
import { actorKey } from './host/ActorKind.ts';
import { createActorHost } from './host/createActorHost.ts';
import { localOwnership } from './host/localOwnership.ts';
import { createIntegrations, type Integrations } from './integrations/createIntegrations.ts';
import { createRedisSocketCaps } from './limits/createRedisSocketCaps.ts';
import { MINIAPP } from './miniapp/createMiniappKind.ts';
import { createMiniappService } from './miniapp/miniappService.ts';
import { gcAdvice, gcThreads, semiSpaceMiB } from './observability/gcThreads.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { createRelay } from './relay/createRelay.ts';
import { GroupCommitter } from './store/GroupCommitter.ts';
import { leaseEpochs } from './store/leases.ts';
import { MiniappRepository } from './store/miniappRepository.ts';
import { openDatabase } from './store/openDatabase.ts';
import { type Pool, poolStats } from './store/pool.ts';
import { registerAdminRoutes } from './transport/adminRoutes.ts';
import { createRouter } from './transport/http.ts';
import { registerIntegrationRoutes } from './transport/integrationRoutes.ts';
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

/** A listen socket is a socket to uWS (its port is read the same way); its types keep the two apart. */
const asSocket = (listen: us_listen_socket): us_socket => listen as unknown as us_socket;

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(invalid url)';
  }
}

/** Deletes miniapp ops past OPS_RETENTION_HOURS every OPS_PRUNE_EVERY_MS; returns the stop. */
function startOpPruning(repo: MiniappRepository, ops: Config['ops'], log: Logger): () => void {
  const timer = setInterval(() => {
    repo
      // A session's last MAX_STALE_VERSIONS ops stay whatever their age: a stale op is checked against them.
      .pruneOps(ops.retentionHours, MAX_STALE_VERSIONS)
      .then((n) => n && log.info({ deleted: n }, 'pruned old miniapp ops'))
      .catch((err) => log.warn({ err }, 'pruning miniapp ops failed'));
  }, ops.pruneEveryMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** `app.listen(host, port, options, cb)`: the native addon takes it; its types lack the overload. */
type ListenWithOptions = (
  host: string,
  port: number,
  options: number,
  cb: (socket: us_listen_socket | false) => void,
) => TemplatedApp;
/**
 * uWebSockets.js shares a port by default (SO_REUSEPORT): a second server started on a port in
 * use would silently take half its connections. This makes it fail to listen instead.
 */
const LIBUS_LISTEN_EXCLUSIVE_PORT = 1;

/** Listens on `host:port` (0: any free port), alone on it; resolves with the socket and its URL. */
function listen(
  uws: ReturnType<typeof loadUws>['uws'],
  app: TemplatedApp,
  host: string,
  port: number,
): Promise<{ socket: us_listen_socket; url: string }> {
  return new Promise((resolve, reject) => {
    (app.listen as unknown as ListenWithOptions).call(app, host, port, LIBUS_LISTEN_EXCLUSIVE_PORT, (socket) => {
      if (!socket) return reject(new Error(`cannot listen on ${host}:${port}`));
      const bound = uws.us_socket_local_port(asSocket(socket));
      resolve({ socket, url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}` });
    });
  });
}

/** What `/metrics` reports of the cluster (zeros until it is connected). */
function clusterStats(cluster: Cluster | undefined) {
  const leases = cluster?.ownership.stats();
  const bus = cluster?.bus.stats();
  return {
    leasesHeld: leases?.held ?? 0,
    leaseEvents: {
      acquired: leases?.acquired ?? 0,
      refused: leases?.refused ?? 0,
      released: leases?.released ?? 0,
      lost: leases?.lost ?? 0,
    },
    busMessages: {
      published: bus?.published ?? 0,
      received: bus?.received ?? 0,
      dropped: bus?.dropped ?? 0,
      malformed: bus?.malformed ?? 0,
    },
  };
}

/** The actors and what they stand on: group commit, the host, the miniapp service, the relay. */
function createActors(
  config: Readonly<Config>,
  pool: Pool,
  jwtKey: JwtKey,
  sockets: MiniappSockets,
  cluster: Cluster | undefined,
  metrics: Metrics,
  log: Logger,
) {
  const committer = new GroupCommitter(pool, { ...config.groupCommit, log, metrics });
  const localHost = createActorHost({
    bumpEpoch: leaseEpochs(committer, config.nodeId),
    ownership: cluster?.ownership ?? localOwnership,
    idleMs: config.actorIdleMs,
    maxActivations: config.actorMaxActivations,
    log,
  });
  // In a cluster, messages go to the process that owns their actor, and a session's frames to
  // every process that holds its sockets; the service, the relay and the kinds are the same.
  const host = cluster
    ? createRoutedHost({
        local: localHost,
        ownership: cluster.ownership,
        bus: cluster.bus,
        log,
        failoverMs: config.actorLeaseMs * 2,
      })
    : localHost;
  const clusterChannel = cluster
    ? createClusterChannel(sockets, cluster.bus, log, {
        // A socket whose process died: it leaves its session, wherever that runs.
        connGone: (conn, sessionId) => host.tell(MINIAPP, sessionId, { type: 'leave', conn }),
        ownerCheckMs: Math.max(250, Math.floor(config.actorLeaseMs / 2)),
        holders: (sessionIds) => cluster.ownership.holders(sessionIds.map((id) => actorKey(MINIAPP, id))),
        // Its sockets here join the next owner (called on a bus message, once `miniapps` exists).
        handedOver: (sessionId) => miniapps.rejoin(sessionId),
      })
    : undefined;
  const channel = clusterChannel ?? sockets;
  const repo = new MiniappRepository(pool);
  const miniapps = createMiniappService({ host, repo, committer, channel, metrics, log, jwtKey, jwt: config.jwt });
  const relay = createRelay({
    config,
    pool,
    committer,
    host,
    metrics,
    log,
    cluster,
  });
  // Open sockets per user and per session are counted across the cluster.
  const socketCaps = (name: string) =>
    cluster ? createRedisSocketCaps({ redis: cluster.redis, prefix: cluster.prefix, name, log }) : undefined;
  const caps = { miniapp: socketCaps('miniapp'), relay: socketCaps('relay') };
  let stopPruning = () => {};
  return {
    host,
    miniapps,
    relay,
    caps,
    start() {
      stopPruning = startOpPruning(repo, config.ops, log);
      relay.start();
    },
    /** No new work: the sweeps stop. */
    stop() {
      stopPruning();
      relay.stop();
    },
    /**
     * Passivates every actor: each saves its state after the commits before it, and (in a
     * cluster) gives up its lease, so the next work for it activates it on another process.
     */
    async passivate() {
      await host.stopAll(config.shutdownTimeoutMs);
      clusterChannel?.close();
    },
    /** What is still queued is committed; then nothing is left running. */
    async close() {
      await committer.flush();
      committer.close();
      relay.close();
      await Promise.all([caps.miniapp?.close(), caps.relay?.close()]);
      await cluster?.close();
    },
  };
}

type Actors = ReturnType<typeof createActors>;

/** HTTP routes and WebSocket endpoints on uWebSockets.js (and `/metrics` on its own app with METRICS_PORT). */
async function createTransport(
  uws: ReturnType<typeof loadUws>['uws'],
  config: Readonly<Config>,
  deps: {
    actors: Actors;
    integrations: Integrations;
    channel: MiniappSockets;
    pool: Pool;
    jwtKey: JwtKey;
    metrics: Metrics;
    log: Logger;
    mode: 'single' | 'cluster';
    accepting: () => boolean;
    /** Cluster mode: whether Redis is reachable. */
    redisUp?: () => boolean;
  },
) {
  const { actors, channel, pool, jwtKey, metrics, log } = deps;
  const { ingest, outbox, relays, conversations } = actors.relay;
  const verify = createVerifier({
    key: 'secret' in jwtKey ? { secret: jwtKey.secret } : { jwksUrl: jwtKey.jwksUrl },
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
    clockToleranceS: config.jwt.clockToleranceS,
  });
  const app = uws.App();
  channel.bind(app);
  const router = createRouter({
    app,
    log,
    metrics,
    maxBodyBytes: config.limits.maxBodyBytes,
    limits: config.limits,
    trustedProxies: config.trustedProxies,
  });
  // With METRICS_PORT, /metrics has a listener of its own (bind it where only Prometheus reaches).
  const metricsApp = config.metrics ? uws.App() : null;
  const metricsRouter = metricsApp ? createRouter({ app: metricsApp, log, metrics, maxBodyBytes: 0 }) : router;
  registerOpsRoutes({
    router,
    metricsRouter,
    pool,
    host: actors.host,
    metrics,
    nodeId: config.nodeId,
    mode: deps.mode,
    accepting: deps.accepting,
    redisUp: deps.redisUp,
  });
  const { miniapps } = actors;
  registerMiniappRoutes({ router, verify, miniapps, metrics, page: await loadMiniappPage() });
  registerRelayRoutes({ router, verify, ingest, relays, conversations, metrics });
  registerAdminRoutes({ router, verify, ingest, metrics });
  registerIntegrationRoutes({ router, verify, metrics, log, vault: deps.integrations.vault });
  const miniappEndpoint = registerMiniappSocket(
    { app, config, verify, miniapps, metrics, log, caps: actors.caps.miniapp },
    channel,
  );
  const relayEndpoint = registerRelaySocket({
    app,
    config,
    verify,
    ingest,
    outbox,
    relays,
    metrics,
    log,
    caps: actors.caps.relay,
  });
  router.fallback();
  if (metricsApp) metricsRouter.fallback();
  return { app, metricsApp, miniappEndpoint, relayEndpoint };
}

export async function startServer(config: Readonly<Config>, options: { log?: Logger } = {}): Promise<RunningServer> {
  const log =
    options.log ?? createLogger({ level: config.logLevel, format: config.logFormat, base: { node: config.nodeId } });
  const { uws, native, reason } = loadUws(config.allowUwsFallback);
  if (!native) log.warn({ reason }, 'running on the slow pure-JS uWebSockets.js fallback (ALLOW_UWS_FALLBACK=1)');
  const jwtKey = await resolveJwtKey(config);
  const mode = config.redisUrl ? 'cluster' : 'single';

  // Each step is undone, in reverse, by `close` (or at once when a later step fails).
  const db = await openDatabase(config, log);
  const { pool, embedded, databaseUrl } = db;
  let socketCounts = () => ({ miniapp: 0, relay: 0 });
  let actors: Actors | undefined;
  let integrations: Integrations | undefined;
  let cluster: Cluster | undefined;
  // The callback URL's base: PUBLIC_URL, else where this server listens (known once it does).
  let publicUrl = config.vault.publicUrl ?? '';
  const metrics = createMetrics({
    pool: () => poolStats(pool),
    actors: () => actors?.host.counts() ?? {},
    sockets: () => socketCounts(),
    breakers: () => ({ ...actors?.relay.breakers(), ...integrations?.breakers() }),
    relaySendsInMemory: () => actors?.relay.outbox.pending() ?? 0,
    relayBacklog: () => actors?.relay.ingest.backlog() ?? { waiting: 0, processing: 0, window: 0 },
    ...(config.redisUrl ? { cluster: () => clusterStats(cluster) } : {}),
  });
  const channel = new MiniappSockets();
  let accepting = true;
  const listeners: us_listen_socket[] = [];
  try {
    if (config.redisUrl) cluster = await connectCluster({ ...config, redisUrl: config.redisUrl }, log);
    actors = createActors(config, pool, jwtKey, channel, cluster, metrics, log);
    const outbox = actors.relay.outbox;
    integrations = await createIntegrations({
      config,
      pool,
      metrics,
      log,
      publicUrl: () => publicUrl,
      notify: (frame) => outbox.enqueue(frame),
    });
    const transport = await createTransport(uws, config, {
      actors,
      integrations,
      channel,
      pool,
      jwtKey,
      metrics,
      log,
      mode,
      accepting: () => accepting,
      redisUp: cluster?.ready,
    });
    const { miniappEndpoint, relayEndpoint } = transport;
    socketCounts = () => ({ miniapp: miniappEndpoint.count(), relay: relayEndpoint.count() });

    const main = await listen(uws, transport.app, config.host, config.port);
    listeners.push(main.socket);
    const metricsListener =
      transport.metricsApp && config.metrics
        ? await listen(uws, transport.metricsApp, config.metrics.host, config.metrics.port)
        : undefined;
    if (metricsListener) listeners.push(metricsListener.socket);
    const { url } = main;
    publicUrl ||= url;
    const port = uws.us_socket_local_port(asSocket(main.socket));
    const metricsUrl = `${metricsListener?.url ?? url}/metrics`;
    actors.start();
    integrations.start();

    const database = embedded ? `embedded in ${embedded.dataDir}` : redactUrl(databaseUrl);
    const redis = config.redisUrl ? redactUrl(config.redisUrl) : 'none';
    log.info(
      {
        mode,
        url,
        database: embedded ? 'embedded' : redactUrl(databaseUrl),
        dataDir: embedded ? embedded.dataDir : undefined,
        redis,
        jwt: jwtKey.source,
        brain: actors.relay.brainMode,
        metrics: metricsUrl,
        integrations: integrations.summary,
        gc: gcThreads(),
        semiSpaceMiB: semiSpaceMiB(),
      },
      `archety listening on ${url} (mode ${mode}, database ${database}, redis ${redis}, brain ${actors.relay.brainMode}, metrics ${metricsUrl}, integrations ${integrations.summary}, gc ${gcThreads()}, semi-space ${semiSpaceMiB()} MiB)`,
    );
    const advice = gcAdvice();
    if (advice) log.warn(advice);

    const running = actors;
    const runningIntegrations = integrations;
    let closing: Promise<void> | undefined;
    const close = async (): Promise<void> => {
      const started = Date.now();
      accepting = false;
      running.stop();
      await runningIntegrations.stop();
      for (const socket of listeners) uws.us_listen_socket_close(socket);
      // Passivation waits for every pending commit (its checkpoint is queued after them), so
      // `applied` frames still reach the open sockets before they are closed.
      await running.passivate();
      await Promise.all([
        miniappEndpoint.closeAll(CloseCodes.goingAway, 'server shutting down'),
        relayEndpoint.closeAll(CloseCodes.goingAway, 'server shutting down'),
      ]);
      await running.close();
      await db.close();
      log.info({ ms: Date.now() - started }, 'shutdown complete');
    };
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
  } catch (err) {
    // A start that failed part way (a port in use, say) leaves nothing running: no listener,
    // no actor, no pool, no embedded database (and so no data-directory lock).
    for (const socket of listeners) uws.us_listen_socket_close(socket);
    await integrations?.stop().catch(() => {});
    if (actors) {
      actors.stop();
      await actors.passivate().catch(() => {});
      await actors.close().catch(() => {});
    } else await cluster?.close().catch(() => {});
    await db.close();
    throw err;
  }
}
