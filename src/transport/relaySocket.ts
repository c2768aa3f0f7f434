/**
 * `/v1/relay`: the relay's persistent channel (role `relay`). Inbound `event` frames are
 * stored like `POST /v1/relay/events` (same inbox, same idempotency key) and answered
 * `accepted` / `duplicate` once durable; outbound `send` frames come from the outbox, and the
 * relay answers each with `ack`.
 */
import type { TemplatedApp, WebSocket } from 'uWebSockets.js';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import type { VerifyToken } from '../auth/verifyToken.ts';
import type { Config } from '../config.ts';
import { Codes, isAppError } from '../errors.ts';
import type { RateLimiter } from '../limits/RateLimiter.ts';
import type { SocketCaps } from '../limits/socketCaps.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { OutboxDispatcher, RelayLink } from '../relay/OutboxDispatcher.ts';
import type { RelayIngest } from '../relay/RelayIngest.ts';
import { authenticate, checkSidScope } from './authenticate.ts';
import { type BaseSocketData, createSocketEndpoint, type Endpoint } from './socketEndpoint.ts';
import { excerpt } from './validate.ts';

interface RelaySocketData extends BaseSocketData {
  link?: RelayLink;
}

export interface RelaySocketDeps {
  app: TemplatedApp;
  config: Config;
  verify: VerifyToken;
  ingest: RelayIngest;
  outbox: OutboxDispatcher;
  /** Per relay token (its `sub`). */
  relays: RateLimiter;
  metrics: Metrics;
  log: Logger;
  /** Where the socket caps are counted (cluster mode: Redis); this process by default. */
  caps?: SocketCaps;
}

export function registerRelaySocket(deps: RelaySocketDeps): Endpoint<RelaySocketData> {
  const { verify, ingest, outbox, relays, metrics, log } = deps;

  async function onEvent(ws: WebSocket<RelaySocketData>, event: unknown): Promise<void> {
    const id =
      typeof (event as { id?: unknown })?.id === 'string' ? (event as { id: string }).id.slice(0, 200) : undefined;
    const wait = await relays.take(ws.getUserData().user);
    if (wait) {
      metrics.rateLimited.inc({ scope: 'relay' });
      endpoint.sendError(ws, Codes.rate_limited, `too many events; retry in ${wait} s`, id);
      return;
    }
    try {
      const result = await ingest.ingest([event]);
      if (result.accepted.length) endpoint.send(ws, { type: 'accepted', id: result.accepted[0] });
      else if (result.duplicates.length) endpoint.send(ws, { type: 'duplicate', id: result.duplicates[0] });
      else {
        const { error } = result.rejected[0];
        endpoint.badFrame(ws, error.code, error.path?.length ? `${error.message}` : error.message, id);
      }
    } catch (err) {
      if (isAppError(err)) {
        endpoint.sendError(ws, err.code, err.message, id);
        return;
      }
      // Handling the frame threw: a bad frame (docs/protocol.md "Tenancy and hostile input").
      log.warn({ err }, 'storing a relay event failed');
      endpoint.badFrame(ws, Codes.internal_error, 'the event could not be stored', id);
    }
  }

  const endpoint = createSocketEndpoint<RelaySocketData>(deps, '/v1/relay', {
    async authorize({ token, conn }) {
      const claims = await authenticate(verify, metrics, token, ['relay']);
      checkSidScope(metrics, claims);
      return { conn, user: claims.sub, expiresAt: claims.exp * 1000, bad: [], closed: false };
    },

    // A relay token's sockets count against MAX_SOCKETS_PER_USER like a person's (each new one
    // takes over every unacknowledged send); relay sockets are counted apart from miniapp ones.
    caps: (d) => [
      {
        scope: 'sockets_user',
        key: d.user,
        max: deps.config.limits.maxSocketsPerUser,
        message: `at most ${deps.config.limits.maxSocketsPerUser} open sockets per relay token`,
      },
    ],

    open(ws) {
      const d = ws.getUserData();
      d.link = {
        id: d.conn,
        // A group commit's replies go out together, in one write.
        send: (frame: SendFrame) => endpoint.sendSoon(ws, frame),
        // uWebSockets.js throws on a closed socket; nothing is written to one anyway.
        buffered: () => (d.closed ? 0 : ws.getBufferedAmount()),
      };
      outbox.attach(d.link);
      log.info({ conn: d.conn }, 'relay connected');
    },

    frame(ws, frame) {
      if (frame.type === 'event') {
        if (typeof frame.event !== 'object' || frame.event === null) {
          endpoint.badFrame(ws, Codes.validation_failed, 'event: an event object is required');
          return;
        }
        void onEvent(ws, frame.event);
      } else if (frame.type === 'ack') {
        if (typeof frame.id !== 'string' || frame.id.length === 0 || frame.id.length > 200) {
          endpoint.badFrame(ws, Codes.validation_failed, 'id: the id of a send is required');
          return;
        }
        outbox.ack(frame.id);
      } else {
        endpoint.badFrame(ws, Codes.unknown_frame_type, `unknown frame type ${excerpt(frame.type)}`);
      }
    },

    drain(ws) {
      const d = ws.getUserData();
      if (d.link) outbox.drained(d.link);
    },

    close(ws, code) {
      const d = ws.getUserData();
      if (d.link) outbox.detach(d.link);
      log.info({ conn: d.conn, code }, 'relay disconnected');
    },
  });
  return endpoint;
}
