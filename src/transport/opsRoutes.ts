/** `/health`, `/ready` and `/metrics` (docs/protocol.md). */
import type { ActorHost } from '../host/createActorHost.ts';
import type { Metrics } from '../observability/metrics.ts';
import { type Pool, poolStats, query } from '../store/pool.ts';
import type { Router } from './http.ts';

export interface OpsRoutesDeps {
  router: Router;
  /** Where `/metrics` is served: `router` unless METRICS_PORT gives it a private listener. */
  metricsRouter: Router;
  pool: Pool;
  host: ActorHost;
  metrics: Metrics;
  nodeId: string;
  mode: 'single' | 'cluster';
  /** False once shutdown began: `/ready` answers 503 so load balancers stop sending work. */
  accepting: () => boolean;
  /** Cluster mode: whether Redis is reachable (`/ready` answers 503 while it is not). */
  redisUp?: () => boolean;
}

/** How long one answer of the database probe of `/ready` is reused. */
const PROBE_TTL_MS = 1000;

/**
 * `probe` behind a cache: at most one call in flight, its answer reused for `ttlMs`; so
 * however many callers `/ready` has (it needs no token), the pool runs at most one probe
 * query a second for them.
 */
export function cachedProbe(probe: () => Promise<unknown>, ttlMs: number): () => Promise<boolean> {
  let last: { up: boolean; at: number } | undefined;
  let inFlight: Promise<boolean> | undefined;
  return () => {
    if (last && performance.now() - last.at < ttlMs) return Promise.resolve(last.up);
    inFlight ??= probe()
      .then(
        () => true,
        () => false,
      )
      .then((up) => {
        last = { up, at: performance.now() };
        inFlight = undefined;
        return up;
      });
    return inFlight;
  };
}

export function registerOpsRoutes(deps: OpsRoutesDeps): void {
  const { router, pool, host, metrics } = deps;
  const databaseUp = cachedProbe(() => query(pool, 'SELECT 1'), PROBE_TTL_MS);

  router.get('/health', () => ({ status: 200, body: { status: 'ok' } }), { quiet: true });

  router.get(
    '/ready',
    async () => {
      const dbUp = await databaseUp();
      const redisUp = deps.redisUp?.();
      const ready = dbUp && redisUp !== false && deps.accepting();
      const counts = host.counts();
      return {
        status: ready ? 200 : 503,
        body: {
          status: ready ? 'ready' : 'unavailable',
          node: deps.nodeId,
          mode: deps.mode,
          db: { ...poolStats(pool), reachable: dbUp },
          ...(redisUp === undefined ? {} : { redis: { reachable: redisUp } }),
          actors: { conversations: counts.conversation ?? 0, miniapps: counts.miniapp ?? 0 },
        },
      };
    },
    { quiet: true },
  );

  deps.metricsRouter.get(
    '/metrics',
    async () => ({
      status: 200,
      raw: await metrics.registry.metrics(),
      headers: { 'content-type': metrics.registry.contentType },
    }),
    { quiet: true },
  );
}
