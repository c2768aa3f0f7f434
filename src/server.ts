/**
 * Assembles one Archety server process: database (external or embedded), migrations, the
 * actor host with its kinds, HTTP routes and WebSocket endpoints on uWebSockets.js; and its
 * graceful shutdown.
 */
import type { TemplatedApp, us_listen_socket, us_socket } from 'uWebSockets.js';
import { MAX_STALE_VERSIONS } from '../actors/miniappSession.ts';
import { resolveJwtKey } from './auth/jwtKey.ts';
import { createVerifier } from './auth/verifyToken.ts';
import type { Config } from './config.ts';
import { CloseCodes } from './errors.ts';
import { createActorHost } from './host/createActorHost.ts';
import { localOwnership } from './host/localOwnership.ts';
import { createMiniappService } from './miniapp/miniappService.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { createMetrics } from './observability/metrics.ts';
import { createRelay } from './relay/createRelay.ts';
import { type EmbeddedPostgres, startEmbeddedPostgres } from './store/embeddedPostgres.ts';
import { GroupCommitter } from './store/GroupCommitter.ts';
import { leaseEpochs } from './store/leases.ts';
import { migrate } from './store/migrate.ts';
import { MiniappRepository } from './store/miniappRepository.ts';
import { createPool, type Pool, poolStats } from './store/pool.ts';
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

/** The database: the embedded one when DATABASE_URL is unset, a pool on it, migrations applied. */
async function openDatabase(config: Readonly<Config>, log: Logger) {
  const embedded: EmbeddedPostgres | undefined = config.databaseUrl
    ? undefined
    : await startEmbeddedPostgres(config.dataDir, config.embeddedPgPort, log);
  const databaseUrl = config.databaseUrl ?? (embedded as EmbeddedPostgres).url;
  const pool = createPool(databaseUrl, config.pg, log);
  const close = async () => {
    await pool.end();
    await embedded?.stop();
  };
  try {
    await migrate(pool, log);
  } catch (err) {
    await close();
    throw err;
  }
  return { pool, embedded, databaseUrl, close };
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

/** Listens on `host:port` (0: any free port); resolves with the socket and its URL. */
function listen(
  uws: ReturnType<typeof loadUws>['uws'],
  app: TemplatedApp,
  host: string,
  port: number,
): Promise<{ socket: us_listen_socket; url: string }> {
  return new Promise((resolve, reject) => {
    app.listen(host, port, (socket) => {
      if (!socket) return reject(new Error(`cannot listen on ${host}:${port}`));
      const bound = uws.us_socket_local_port(asSocket(socket));
      resolve({ socket, url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}` });
    });
  });
}

export async function startServer(config: Readonly<Config>, options: { log?: Logger } = {}): Promise<RunningServer> {
  const log =
    options.log ?? createLogger({ level: config.logLevel, format: config.logFormat, base: { node: config.nodeId } });
  const { uws, native, reason } = loadUws(config.allowUwsFallback);
  if (!native) log.warn({ reason }, 'running on the slow pure-JS uWebSockets.js fallback (ALLOW_UWS_FALLBACK=1)');
  const jwtKey = await resolveJwtKey(config);
  if (config.redisUrl) log.warn('REDIS_URL is set, but cluster mode is not available yet: running single-node');
  const mode = 'single' as const;

  const db = await openDatabase(config, log);
  const { pool, embedded, databaseUrl } = db;

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
    breakers: () => relay.breakers(),
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
  const repo = new MiniappRepository(pool);
  const miniapps = createMiniappService({
    host,
    repo,
    committer,
    channel: sockets,
    metrics,
    log,
    jwtKey,
    jwt: config.jwt,
  });

  const relay = createRelay({ config, pool, committer, host, metrics, log });
  const { ingest, outbox, relays, conversations } = relay;

  const app = uws.App();
  sockets.bind(app);
  let accepting = true;
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
    host,
    metrics,
    nodeId: config.nodeId,
    mode,
    accepting: () => accepting,
  });
  registerMiniappRoutes({ router, verify, miniapps, metrics, page: await loadMiniappPage() });
  registerRelayRoutes({ router, verify, ingest, relays, conversations, metrics });
  registerAdminRoutes({ router, verify, ingest, metrics });
  const miniappEndpoint = registerMiniappSocket({ app, config, verify, miniapps, metrics, log }, sockets);
  const relayEndpoint = registerRelaySocket({ app, config, verify, ingest, outbox, relays, metrics, log });
  socketCounts = () => ({ miniapp: miniappEndpoint.count(), relay: relayEndpoint.count() });
  router.fallback();
  if (metricsApp) metricsRouter.fallback();

  const { socket: listenSocket, url } = await listen(uws, app, config.host, config.port);
  const port = uws.us_socket_local_port(asSocket(listenSocket));
  const metricsListener =
    metricsApp && config.metrics ? await listen(uws, metricsApp, config.metrics.host, config.metrics.port) : undefined;
  const metricsUrl = `${metricsListener?.url ?? url}/metrics`;

  const stopPruning = startOpPruning(repo, config.ops, log);
  relay.start();

  log.info(
    {
      mode,
      url,
      database: embedded ? 'embedded' : redactUrl(databaseUrl),
      dataDir: embedded ? embedded.dataDir : undefined,
      redis: config.redisUrl ? redactUrl(config.redisUrl) : 'none',
      jwt: jwtKey.source,
      brain: relay.brainMode,
      metrics: metricsUrl,
    },
    `archety listening on ${url} (mode ${mode}, database ${embedded ? `embedded in ${embedded.dataDir}` : redactUrl(databaseUrl)}, redis ${config.redisUrl ? redactUrl(config.redisUrl) : 'none'}, brain ${relay.brainMode}, metrics ${metricsUrl})`,
  );

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    const started = Date.now();
    accepting = false;
    stopPruning();
    relay.stop();
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
    relay.close();
    await db.close();
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
