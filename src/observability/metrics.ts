/** Prometheus metrics of one server (`GET /metrics`), in a registry of its own. */
import client from 'prom-client';

export interface Metrics {
  registry: client.Registry;
  authFailures: client.Counter<'reason'>;
  opLatency: client.Histogram;
  opsApplied: client.Counter;
  opOutcomes: client.Counter<'outcome'>;
  groupCommits: client.Histogram;
  groupCommitSize: client.Histogram;
  rateLimited: client.Counter<'scope'>;
  badFrames: client.Counter<'code'>;
  httpRequests: client.Counter<'route' | 'status'>;
  eventLatency: client.Histogram;
  memoryRecalls: client.Counter;
  relayEvents: client.Counter<'outcome'>;
  conversationMessages: client.Counter<'outcome'>;
  conversationCommitMessages: client.Histogram;
  sendsDelivered: client.Counter;
  relayAttemptsFailed: client.Counter;
  relayEventsFailed: client.Counter;
  oauthConnects: client.Counter<'provider' | 'outcome'>;
  oauthRefreshes: client.Counter<'provider'>;
  oauthRefreshFailures: client.Counter<'provider' | 'reason'>;
  oauthRefreshGaveUp: client.Counter<'provider'>;
  oauthRevocations: client.Counter<'provider'>;
}

export interface GaugeSources {
  pool: () => { total: number; idle: number; waiting: number };
  actors: () => Record<string, number>;
  sockets: () => Record<string, number>;
  /** Circuit breaker states by dependency (0 closed, 1 open, 2 half-open, 3 isolated). */
  breakers?: () => Record<string, number>;
  /** Relay sends held in memory (sent and not yet acknowledged, or about to be sent). */
  relaySendsInMemory?: () => number;
  /** Relay events accepted and not yet processed here: waiting for the window, and in it. */
  relayBacklog?: () => { waiting: number; processing: number; window: number };
  /** Cluster mode: leases held now, and counts since the start (lease events, bus messages). */
  cluster?: () => {
    leasesHeld: number;
    leaseEvents: Record<'acquired' | 'refused' | 'released' | 'lost', number>;
    busMessages: Record<'published' | 'received' | 'dropped' | 'malformed', number>;
  };
}

/**
 * A counter that reports a count kept elsewhere (cumulative since the start), by label: each
 * scrape adds what it grew by since the last one.
 */
function mirroredCounter(
  registry: client.Registry,
  name: string,
  help: string,
  label: string,
  read: () => Record<string, number> | undefined,
): void {
  const seen = new Map<string, number>();
  new client.Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      for (const [value, count] of Object.entries(read() ?? {})) {
        const grown = count - (seen.get(value) ?? 0);
        if (grown > 0) this.inc({ [label]: value }, grown);
        seen.set(value, count);
      }
    },
  });
}

export function createMetrics(sources: GaugeSources): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const poolGauge = (name: string, help: string, pick: 'total' | 'idle' | 'waiting') =>
    new client.Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(sources.pool()[pick]);
      },
    });
  poolGauge('archety_db_pool_total', 'Connections open in the PostgreSQL pool.', 'total');
  poolGauge('archety_db_pool_idle', 'Idle connections in the PostgreSQL pool.', 'idle');
  poolGauge('archety_db_pool_waiting', 'Queries waiting for a pool connection.', 'waiting');
  new client.Gauge({
    name: 'archety_actors_live',
    help: 'Actors active in this process, by kind.',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      for (const [kind, n] of Object.entries(sources.actors())) this.set({ kind }, n);
    },
  });
  new client.Gauge({
    name: 'archety_sockets_open',
    help: 'Open WebSockets, by endpoint.',
    labelNames: ['endpoint'],
    registers: [registry],
    collect() {
      for (const [endpoint, n] of Object.entries(sources.sockets())) this.set({ endpoint }, n);
    },
  });
  new client.Gauge({
    name: 'archety_circuit_breaker_state',
    help: 'Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open, 3 isolated.',
    labelNames: ['dependency'],
    registers: [registry],
    collect() {
      for (const [dependency, state] of Object.entries(sources.breakers?.() ?? {})) this.set({ dependency }, state);
    },
  });
  new client.Gauge({
    name: 'archety_relay_sends_in_memory',
    help: 'Relay sends held in memory: sent and not yet acknowledged, or about to be sent (the rest wait in PostgreSQL).',
    registers: [registry],
    collect() {
      this.set(sources.relaySendsInMemory?.() ?? 0);
    },
  });
  new client.Gauge({
    name: 'archety_relay_backlog',
    help: 'Relay events accepted and not yet processed by this process: waiting for the processing window, or processing.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const backlog = sources.relayBacklog?.() ?? { waiting: 0, processing: 0 };
      this.set({ state: 'waiting' }, backlog.waiting);
      this.set({ state: 'processing' }, backlog.processing);
    },
  });
  new client.Gauge({
    name: 'archety_relay_processing_window',
    help: 'Conversations that may process a relay event at once now: RELAY_PROCESSING_WINDOW, less while storing new events is slow and events wait.',
    registers: [registry],
    collect() {
      this.set(sources.relayBacklog?.().window ?? 0);
    },
  });
  if (sources.cluster) {
    const cluster = sources.cluster;
    new client.Gauge({
      name: 'archety_cluster_leases_held',
      help: 'Cluster mode: actor leases this process holds in Redis.',
      registers: [registry],
      collect() {
        this.set(cluster().leasesHeld);
      },
    });
    mirroredCounter(
      registry,
      'archety_cluster_lease_events_total',
      'Cluster mode: actor leases acquired, refused (held elsewhere), released and lost (not extended in time).',
      'event',
      () => cluster().leaseEvents,
    );
    mirroredCounter(
      registry,
      'archety_cluster_bus_messages_total',
      'Cluster mode: bus messages published, received, dropped (Redis away) and malformed (ignored).',
      'event',
      () => cluster().busMessages,
    );
  }
  return {
    registry,
    oauthConnects: new client.Counter({
      name: 'archety_oauth_connects_total',
      help: 'OAuth connections by provider and outcome: started (a URL handed out), connected, invalid_state, and provider failures (denied, rejected, invalid_grant, bad_response, unavailable, timeout).',
      labelNames: ['provider', 'outcome'],
      registers: [registry],
    }),
    oauthRefreshes: new client.Counter({
      name: 'archety_oauth_refreshes_total',
      help: 'OAuth access tokens refreshed (by the job or on demand), by provider.',
      labelNames: ['provider'],
      registers: [registry],
    }),
    oauthRefreshFailures: new client.Counter({
      name: 'archety_oauth_refresh_failures_total',
      help: 'Failed OAuth refresh attempts (retried with backoff), by provider and reason (unavailable, timeout, bad_response, rejected, decrypt, …).',
      labelNames: ['provider', 'reason'],
      registers: [registry],
    }),
    oauthRefreshGaveUp: new client.Counter({
      name: 'archety_oauth_refresh_failed_total',
      help: 'Integrations marked refresh_failed after OAUTH_REFRESH_MAX_ATTEMPTS failed refreshes, by provider.',
      labelNames: ['provider'],
      registers: [registry],
    }),
    oauthRevocations: new client.Counter({
      name: 'archety_oauth_revocations_total',
      help: 'Integrations marked revoked because the provider answered invalid_grant (the user was told), by provider.',
      labelNames: ['provider'],
      registers: [registry],
    }),
    relayAttemptsFailed: new client.Counter({
      name: 'archety_relay_event_attempts_failed_total',
      help: 'Attempts at processing a relay event that failed (the event is retried with backoff).',
      registers: [registry],
    }),
    relayEventsFailed: new client.Counter({
      name: 'archety_relay_events_failed_total',
      help: 'Relay events marked failed after RELAY_MAX_ATTEMPTS failed attempts.',
      registers: [registry],
    }),
    eventLatency: new client.Histogram({
      name: 'archety_event_latency_seconds',
      help: 'Relay event received → its processing committed (reply in the outbox).',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    relayEvents: new client.Counter({
      name: 'archety_relay_events_total',
      help: 'Relay events by outcome: accepted, duplicate, rejected, backlogged (refused: the backlog was full).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    conversationMessages: new client.Counter({
      name: 'archety_conversation_messages_total',
      help: 'Messages processed by conversations, by reply kind (model, offline: the offline brain without OPENAI_API_KEY, fallback, safety, forget, none).',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    memoryRecalls: new client.Counter({
      name: 'archety_memory_recalls_total',
      help: "Reads of a conversation's memories for a message to answer (read ahead for a batch, or alone): about one per message; more means reads were repeated.",
      registers: [registry],
    }),
    conversationCommitMessages: new client.Histogram({
      name: 'archety_conversation_commit_messages',
      help: "Messages per conversation commit: a conversation's relay events that waited behind each other are worked through and committed together.",
      buckets: [1, 2, 4, 8, 16],
      registers: [registry],
    }),
    sendsDelivered: new client.Counter({
      name: 'archety_relay_sends_acked_total',
      help: 'Sends the relay acknowledged.',
      registers: [registry],
    }),
    authFailures: new client.Counter({
      name: 'archety_auth_failures_total',
      help: 'Refused authentications (HTTP and WebSocket upgrades), by reason.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    opLatency: new client.Histogram({
      name: 'archety_op_latency_seconds',
      help: 'Miniapp op received → applied frame sent (after the commit).',
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    opsApplied: new client.Counter({
      name: 'archety_ops_applied_total',
      help: 'Miniapp ops committed.',
      registers: [registry],
    }),
    opOutcomes: new client.Counter({
      name: 'archety_op_outcomes_total',
      help: 'Miniapp ops answered otherwise than applied, by outcome.',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    groupCommits: new client.Histogram({
      name: 'archety_group_commit_seconds',
      help: 'Duration of one group-commit transaction.',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers: [registry],
    }),
    groupCommitSize: new client.Histogram({
      name: 'archety_group_commit_writes',
      help: 'Writes in one group-commit transaction.',
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000],
      registers: [registry],
    }),
    rateLimited: new client.Counter({
      name: 'archety_rate_limited_total',
      help: 'Requests, upgrades or frames refused by a rate limit, by scope.',
      labelNames: ['scope'],
      registers: [registry],
    }),
    badFrames: new client.Counter({
      name: 'archety_bad_frames_total',
      help: 'WebSocket frames answered with an error, by code.',
      labelNames: ['code'],
      registers: [registry],
    }),
    httpRequests: new client.Counter({
      name: 'archety_http_requests_total',
      help: 'HTTP requests answered, by route and status.',
      labelNames: ['route', 'status'],
      registers: [registry],
    }),
  };
}
