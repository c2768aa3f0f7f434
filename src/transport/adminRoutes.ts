/**
 * Admin routes (docs/protocol.md "Exactly once under backlog"): relay events that failed every
 * attempt (RELAY_MAX_ATTEMPTS) are listed, and retried one by one once the cause is fixed.
 */
import { z } from 'zod';
import { isWellFormedText } from '../../actors/text.ts';
import type { VerifyToken } from '../auth/verifyToken.ts';
import { AppError } from '../errors.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { RelayIngest } from '../relay/RelayIngest.ts';
import { authenticateRequest } from './authenticate.ts';
import type { Router } from './http.ts';
import { parseWith, truncate } from './validate.ts';

export interface AdminRoutesDeps {
  router: Router;
  verify: VerifyToken;
  ingest: RelayIngest;
  metrics: Metrics;
}

const listSchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  /** The `next` of the previous page. */
  after: z.coerce.number().int().min(0).default(0),
});

/** Event ids are at most 200 characters (docs/protocol.md limits). */
const MAX_ID_CHARS = 200;

export function registerAdminRoutes(deps: AdminRoutesDeps): void {
  const { router, verify, ingest, metrics } = deps;
  const guard = (req: { headers: Record<string, string> }) =>
    authenticateRequest(verify, metrics, req.headers, ['admin']);

  router.get(
    '/v1/admin/failed-events',
    async (req) => {
      const q = parseWith(listSchema, Object.fromEntries(req.query));
      const rows = await ingest.failed(q.after, q.limit);
      return {
        status: 200,
        body: {
          events: rows.map(({ seq: _seq, ...event }) => event),
          next: rows.length === q.limit ? rows[rows.length - 1].seq : null,
        },
      };
    },
    { guard },
  );

  router.post(
    '/v1/admin/failed-events/:id/retry',
    async (req) => {
      let id: string;
      try {
        id = decodeURIComponent(req.params[0]);
      } catch {
        throw new AppError('validation_failed', 'id: not a valid URL-encoded event id', { path: ['id'] });
      }
      if (id.length === 0 || id.length > MAX_ID_CHARS || !isWellFormedText(id)) {
        throw new AppError('validation_failed', `id: an event id of 1–${MAX_ID_CHARS} characters`, { path: ['id'] });
      }
      if (!(await ingest.retry(id))) {
        throw new AppError('failed_event_not_found', `no failed event ${JSON.stringify(truncate(id))}`);
      }
      return { status: 202, body: { id, status: 'pending' } };
    },
    { guard, body: false },
  );
}
