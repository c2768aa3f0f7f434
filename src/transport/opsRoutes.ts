/** `/health`, `/ready` and `/metrics` (PROTOCOL.md). */
import type { ActorHost } from '../host/createActorHost.ts';
import type { Metrics } from '../observability/metrics.ts';
import { type Pool, poolStats, query } from '../store/pool.ts';
import type { Router } from './http.ts';

export interface OpsRoutesDeps {
  router: Router;
  pool: Pool;
  host: ActorHost;
  metrics: Metrics;
  nodeId: string;
  mode: 'single' | 'cluster';
  /** False once shutdown began: `/ready` answers 503 so load balancers stop sending work. */
  accepting: () => boolean;
}

export function registerOpsRoutes(deps: OpsRoutesDeps): void {
  const { router, pool, host, metrics } = deps;

  router.get('/health', () => ({ status: 200, body: { status: 'ok' } }));

  router.get('/ready', async () => {
    let dbUp = false;
    try {
      await query(pool, 'SELECT 1');
      dbUp = true;
    } catch {
      dbUp = false;
    }
    const ready = dbUp && deps.accepting();
    const counts = host.counts();
    return {
      status: ready ? 200 : 503,
      body: {
        status: ready ? 'ready' : 'unavailable',
        node: deps.nodeId,
        mode: deps.mode,
        db: { ...poolStats(pool), reachable: dbUp },
        actors: { conversations: counts.conversation ?? 0, miniapps: counts.miniapp ?? 0 },
      },
    };
  });

  router.get('/metrics', async () => ({
    status: 200,
    raw: await metrics.registry.metrics(),
    headers: { 'content-type': metrics.registry.contentType },
  }));
}
