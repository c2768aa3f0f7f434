/** `POST /v1/relay/events` and `GET /v1/conversations/:key/messages` (docs/protocol.md). */
import { z } from 'zod';
import { isDirectKeyOf } from '../../actors/conversationKey.ts';
import type { VerifyToken } from '../auth/verifyToken.ts';
import { AppError } from '../errors.ts';
import type { RateLimiter } from '../limits/RateLimiter.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { RelayIngest } from '../relay/RelayIngest.ts';
import { MAX_BATCH } from '../relay/relayEvent.ts';
import type { ConversationRepository } from '../store/conversationRepository.ts';
import { authenticateRequest } from './authenticate.ts';
import type { RequestHead, Router } from './http.ts';
import { parseWith } from './validate.ts';

export interface RelayRoutesDeps {
  router: Router;
  verify: VerifyToken;
  ingest: RelayIngest;
  relays: RateLimiter;
  conversations: ConversationRepository;
  metrics: Metrics;
}

const pageSchema = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  before: z
    .string()
    .refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 timestamp')
    .optional(),
});

export function registerRelayRoutes(deps: RelayRoutesDeps): void {
  const { router, verify, ingest, relays, conversations, metrics } = deps;

  router.post(
    '/v1/relay/events',
    async (req) => {
      const claims = req.auth;
      const body = req.body as Record<string, unknown>;
      const batch = 'events' in body;
      let events: unknown[];
      if (batch) {
        if (!Array.isArray(body.events))
          throw new AppError('validation_failed', 'events: must be an array', { path: ['events'] });
        if (body.events.length > MAX_BATCH) {
          throw new AppError('batch_too_large', `at most ${MAX_BATCH} events per batch; nothing was stored`, {
            path: ['events'],
          });
        }
        if (body.events.length === 0)
          throw new AppError('validation_failed', 'events: must hold at least one event', { path: ['events'] });
        events = body.events;
      } else {
        events = [body];
      }
      const wait = await relays.take(claims.sub, events.length);
      if (wait) {
        metrics.rateLimited.inc({ scope: 'relay' });
        throw new AppError('rate_limited', 'too many events from this relay; nothing was stored', { retryAfter: wait });
      }
      const result = await ingest.ingest(events);
      if (!batch && result.rejected.length) {
        const { error } = result.rejected[0];
        throw new AppError(error.code, error.message, { path: error.path ?? [] });
      }
      if (result.accepted.length + result.duplicates.length === 0) {
        return {
          status: 400,
          body: {
            error: { code: 'no_valid_events', message: 'no event of the batch is valid; see rejected' },
            ...result,
          },
        };
      }
      return { status: 202, body: result };
    },
    {
      guard: (req: RequestHead) => authenticateRequest(verify, metrics, req.headers, ['relay']),
      // Relay bodies may carry inline photos: MAX_BODY_BYTES, the router's default.
      // Pushes stored (202) come thousands a second: their lines are debug (counted in
      // archety_relay_events_total); refused or failed pushes stay at info.
      quiet: (status) => status === 202,
    },
  );

  router.get(
    '/v1/conversations/:key/messages',
    async (req) => {
      const claims = req.auth;
      let key: string;
      try {
        key = decodeURIComponent(req.params[0]);
      } catch {
        throw new AppError('validation_failed', 'key: not a valid URL-encoded key', { path: ['key'] });
      }
      if (claims.role !== 'admin' && !isDirectKeyOf(key, claims.sub)) {
        throw new AppError('forbidden', 'only an admin or the person of a direct conversation may read it');
      }
      const q = parseWith(pageSchema, Object.fromEntries(req.query));
      const body = await conversations.page(
        key,
        q.before ? new Date(q.before) : new Date(Date.now() + 60_000),
        q.limit,
      );
      if (body === undefined) throw new AppError('conversation_not_found', `no conversation ${key}`);
      return { status: 200, raw: body, headers: { 'content-type': 'application/json' } };
    },
    { guard: (req: RequestHead) => authenticateRequest(verify, metrics, req.headers, ['admin', 'user']) },
  );
}
