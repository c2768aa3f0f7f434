/**
 * The server's configuration: one typed, frozen object built from the environment and
 * validated once at start. Every option is in the README's configuration table with its
 * unit and default; an invalid value fails with one line naming the variable.
 */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { parseVaultKeys } from './integrations/vaultKeys.ts';
import { TrustedProxies } from './limits/trustedProxies.ts';

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);
const bool = z.enum(['0', '1', 'true', 'false']).transform((v) => v === '1' || v === 'true');
const cores = os.availableParallelism();

/** Every variable, with its default. Names match the environment exactly. */
const envSchema = z.object({
  PORT: int(0, 65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  /** When set, `/metrics` is served only on this port (of METRICS_HOST), not on PORT. */
  METRICS_PORT: int(0, 65535).optional(),
  METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  NODE_ID: z.string().min(1).max(100).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** `pretty`: human-readable; `json`: one JSON object per line. Default: pretty on a TTY. */
  LOG_FORMAT: z.enum(['pretty', 'json']).optional(),

  DATABASE_URL: z.string().url().optional(),
  DATA_DIR: z.string().min(1).default('./.data'),
  /** Port of the embedded PostgreSQL; 0 picks a free one. */
  EMBEDDED_PG_PORT: int(0, 65535).default(0),
  REDIS_URL: z.string().url().optional(),
  REDIS_PREFIX: z.string().default('archety:'),
  /**
   * Cluster mode: how long an actor's Redis lease lasts unless extended (every third of it).
   * A process cut off from Redis stops its actors within this; another takes them over after it.
   */
  ACTOR_LEASE_MS: int(1000).default(10_000),

  PG_POOL_MAX: int(1, 1000).default(cores * 2 + 4),
  PG_CONNECTION_TIMEOUT_MS: int(1).default(2000),
  PG_IDLE_TIMEOUT_MS: int(0).default(30_000),
  PG_MAX_LIFETIME_S: int(0).default(1800),
  PG_STATEMENT_TIMEOUT_MS: int(0).default(5000),
  /**
   * How often each connection drops the plans of its prepared statements (`DISCARD PLANS`), so
   * that a plan made while a table was small is made again as it grows: PostgreSQL makes it
   * again after an ANALYZE of the table, which with autovacuum off nothing runs.
   */
  PG_PLAN_REFRESH_MS: int(100).default(60_000),
  /**
   * `idle_in_transaction_session_timeout` of every connection (0: none). Unset: half of
   * ACTOR_LEASE_MS, at least 1 s: a process paused in the middle of a commit (SIGSTOP, a VM
   * frozen) would otherwise hold the session's row locks until it wakes, and the process that
   * took its actors over could not write.
   */
  PG_IDLE_IN_TRANSACTION_TIMEOUT_MS: int(0).optional(),
  PG_KEEPALIVE_DELAY_MS: int(0).default(10_000),
  PG_APPLICATION_NAME: z.string().default('archety'),
  /** Most writes committed in one group-commit transaction. */
  GROUP_COMMIT_MAX_BATCH: int(1, 100_000).default(2000),
  /**
   * Most bytes (the JSON size of the items) in one group-commit transaction, in bytes; an
   * item larger than this goes alone.
   */
  GROUP_COMMIT_MAX_BYTES: int(1024).default(4 * 1024 * 1024),
  /** Attempts for a group commit that failed on a connection error before the writes fail. */
  GROUP_COMMIT_ATTEMPTS: int(1, 10).default(4),
  /**
   * Group-commit transactions in flight at once, each on its own connection (an actor's writes
   * keep to one lane); at most PG_POOL_MAX − 2 (the relay inbox has a lane of its own, and reads
   * need a connection). One by default: on a 2-core machine a second lane
   * made each transaction smaller and PostgreSQL's work per op larger, for no more throughput.
   */
  GROUP_COMMIT_LANES: int(1, 32).default(1),
  /**
   * Least time between the starts of a lane's commits of miniapp ops while they keep arriving
   * during small commits, in ms (0: commit as soon as the lane is free); a lone writer is never
   * paced, nor relay writes. At 2,000 ops/s over 1,000 sessions, 4 ms made 4–5× fewer commits
   * and cost 22 % less server CPU per op, for 1.7 ms more median latency (bench/README.md).
   */
  GROUP_COMMIT_INTERVAL_MS: int(0, 1000).default(4),

  JWT_SECRET: z.string().optional(),
  JWT_JWKS_URL: z.string().url().optional(),
  JWT_ISSUER: z.string().min(1).default('archety'),
  JWT_AUDIENCE: z.string().min(1).default('archety'),
  JWT_CLOCK_TOLERANCE_S: int(0, 5).default(5),

  ACTOR_IDLE_MS: int(100).default(60_000),
  /** Miniapp ops older than this are deleted, unless among their session's last 1,000 versions. */
  OPS_RETENTION_HOURS: int(1).default(24),
  /** How often old miniapp ops are pruned. */
  OPS_PRUNE_EVERY_MS: int(100).default(3_600_000),
  /** Actor activations (rehydrations from PostgreSQL) in progress at once; the rest wait in the host. Default: half of PG_POOL_MAX. */
  ACTOR_MAX_ACTIVATIONS: int(1, 1000).optional(),
  MAX_BODY_BYTES: int(1024).default(32 * 1024 * 1024),
  MAX_TEXT_CHARS: int(1).default(10_000),
  MAX_ATTACHMENT_BYTES: int(1).default(10 * 1024 * 1024),
  MAX_FRAME_BYTES: int(256, 16 * 1024 * 1024).default(64 * 1024),
  MAX_OPS_PER_SECOND: int(1).default(50),
  /**
   * Proxies of our own (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names
   * the client that per-address limits key on. Empty: every peer is its own client.
   */
  TRUSTED_PROXIES: z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((e) => e.trim())
        .filter(Boolean),
    )
    .superRefine((entries, ctx) => {
      try {
        new TrustedProxies(entries);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    }),
  UPGRADES_PER_IP_PER_SECOND: int(0).default(50),
  UPGRADES_BURST: int(1).default(500),
  /** HTTP requests per client address per second (token bucket); more: 429. 0: no limit. */
  HTTP_REQUESTS_PER_IP_PER_SECOND: int(0).default(100),
  /** Burst of that limit (requests). */
  HTTP_REQUESTS_BURST: int(1).default(1000),
  /** Request bodies being received at once from one client address; more: 429. 0: no limit. */
  BODIES_IN_FLIGHT_PER_IP: int(0).default(16),
  /** Open sockets per user id (and per relay token) on one endpoint; more: upgrade 429. 0: no limit. */
  MAX_SOCKETS_PER_USER: int(0).default(20),
  /** Open sockets per miniapp session; more: upgrade 429. 0: no limit. */
  MAX_SOCKETS_PER_SESSION: int(0).default(1000),
  /** Seconds without traffic before a socket is closed; pings keep live ones open. */
  WS_IDLE_TIMEOUT_S: int(8, 960).default(120),
  /** Bytes queued for one socket before it is dropped as a slow consumer. */
  WS_MAX_BACKPRESSURE_BYTES: int(1024).default(1024 * 1024),
  SHUTDOWN_TIMEOUT_MS: int(100).default(8000),

  OPENAI_API_KEY: z.string().min(1).optional(),
  OPENAI_BASE_URL: z.string().url().optional(),
  OPENAI_MODEL: z.string().min(1).default('gpt-4o-mini'),
  OPENAI_VISION_MODEL: z.string().min(1).default('gpt-4o-mini'),
  OPENAI_MODERATION_MODEL: z.string().min(1).default('omni-moderation-latest'),
  /** One model call's time limit (a reply or a moderation); retries and the breaker sit around it. */
  MODEL_TIMEOUT_MS: int(100).default(15_000),
  /** Consecutive model failures that open the circuit breaker. */
  MODEL_BREAKER_FAILURES: int(1).default(5),
  /** How long an open breaker waits before letting one call through. */
  MODEL_BREAKER_HALF_OPEN_MS: int(100).default(30_000),
  /** Longest a photo's analysis may hold the messages that follow it. */
  PHOTO_WAIT_MS: int(100).default(20_000),
  /** Longest a photo not seen within PHOTO_WAIT_MS is still looked at, to be remembered later. */
  PHOTO_LATE_MS: int(100).default(120_000),
  /** Comma-separated hosts whose https URLs attachments may use. */
  RELAY_MEDIA_HOSTS: z.string().default(''),
  /** Messages one sender may send per minute before Sage stops answering each one (still stored). */
  SENDER_MESSAGES_PER_MINUTE: int(1).default(20),
  SENDER_BURST: int(1).default(5),
  /** A throttled sender gets one answer once quiet for this long. */
  BURST_QUIET_MS: int(10).default(3000),
  /** Events one relay token may push per second (HTTP 429 above). */
  RELAY_EVENTS_PER_SECOND: int(1).default(500),
  RELAY_EVENTS_BURST: int(1).default(2000),
  /** An unacknowledged send is delivered again after this long. */
  RELAY_REDELIVER_MS: int(100).default(30_000),
  /** How often inbox rows still pending (for 1.5× this long) are delivered to their conversation again. */
  RELAY_INBOX_SWEEP_MS: int(100).default(10_000),
  /** Failed attempts at processing an event before it is marked `failed` (listed by the admin routes). */
  RELAY_MAX_ATTEMPTS: int(1, 100).default(5),
  /** Wait after an event's first failed attempt; doubles with each further one (ms). */
  RELAY_RETRY_BACKOFF_MS: int(0).default(10_000),
  /** Conversations processing relay events at once, per process; other events wait their turn. */
  RELAY_PROCESSING_WINDOW: int(1, 1_000_000).default(256),
  /** A conversation's waiting relay events handed to it at once, at most: worked through in order, committed together. */
  RELAY_BATCH_EVENTS: int(1, 1000).default(16),
  /** A batch of a conversation's events is committed once its work has taken this long (ms); the rest follow. */
  RELAY_BATCH_COMMIT_MS: int(0, 60_000).default(20),
  /** Relay events accepted and not yet processed, per process, above which ingest answers 429 `relay_backlogged`. */
  RELAY_BACKLOG_MAX: int(100, 100_000_000).default(100_000),
  /** Bytes of waiting relay events' payloads held in memory, per process; past it they are read back from the inbox. */
  RELAY_BACKLOG_HELD_BYTES: int(0).default(64 * 1024 * 1024),
  /** Sends held in memory per relay: sent and not yet acknowledged (the rest wait in PostgreSQL). */
  RELAY_SEND_WINDOW: int(1, 100_000).default(1000),
  /** Processed events' payloads (texts, photos) are removed from `relay_inbox` after this. */
  INBOX_RETENTION_HOURS: int(1).default(24),
  /** Attachment data of processed events is removed from `relay_inbox` sooner: after this. */
  INBOX_ATTACHMENT_RETENTION_MINUTES: int(1).default(60),
  /** Acknowledged sends are deleted from `relay_outbox` after this. */
  OUTBOX_RETENTION_HOURS: int(1).default(24),
  /** How often relay retention (inbox payloads, acknowledged sends) runs. */
  RELAY_RETENTION_EVERY_MS: int(100).default(600_000),
  ALLOW_UWS_FALLBACK: bool.default(false),

  /**
   * Keys of the OAuth token vault: `kid:base64url-32-bytes` pairs, comma-separated; the first
   * encrypts, all decrypt. Unset: the embedded default generates one under DATA_DIR; with
   * DATABASE_URL set, integrations are off.
   */
  VAULT_KEYS: z.string().optional(),
  /** Base of the OAuth callback URL (`<PUBLIC_URL>/v1/integrations/<name>/callback`). Default `http://<HOST>:<PORT>`. */
  PUBLIC_URL: z.string().url().optional(),
  /** Tokens expiring within this many seconds are refreshed by the background job. */
  OAUTH_REFRESH_AHEAD_S: int(0).default(300),
  /** How often the refresh job runs, in seconds (fractions allowed). */
  OAUTH_REFRESH_INTERVAL_S: z.coerce.number().positive().max(86_400).default(60),
  /** Failed refreshes of one token before it is marked `refresh_failed`. */
  OAUTH_REFRESH_MAX_ATTEMPTS: int(1, 100).default(5),
  /** Wait after a token's first failed refresh, in seconds (fractions allowed); doubles with each further one. */
  OAUTH_REFRESH_BACKOFF_S: z.coerce.number().min(0).max(86_400).default(30),
  /** Tokens one run of the refresh job claims at once (per process). */
  OAUTH_REFRESH_BATCH: int(1, 1000).default(50),
  /** One call to a provider's token or revocation endpoint: its time limit (ms). */
  OAUTH_TIMEOUT_MS: int(100).default(10_000),
  /** Attempts of one provider call (retried with backoff on 5xx, network errors and timeouts). */
  OAUTH_ATTEMPTS: int(1, 10).default(2),
  /** Consecutive failed calls to one provider that open its circuit breaker. */
  OAUTH_BREAKER_FAILURES: int(1).default(5),
  /** How long an open provider breaker waits before letting one call through (ms). */
  OAUTH_BREAKER_HALF_OPEN_MS: int(100).default(30_000),
});

export type Env = z.input<typeof envSchema>;

/** The server's configuration, as `configFrom` builds it from the checked environment. */
export type Config = ReturnType<typeof configFrom> & { oauthProviders: OAuthProviderConfig[] };

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Builds the configuration from `env` (default `process.env`); throws ConfigError naming the variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Readonly<Config> {
  const present = Object.fromEntries(
    Object.keys(envSchema.shape)
      .filter((key) => env[key] !== undefined && env[key] !== '')
      .map((key) => [key, env[key]]),
  );
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue.path[0]);
    throw new ConfigError(
      `invalid configuration: ${name}=${JSON.stringify(redactValue(name, env[name] ?? ''))}: ${issue.message}`,
    );
  }
  const e = parsed.data;
  if (e.JWT_SECRET !== undefined && Buffer.byteLength(e.JWT_SECRET, 'utf8') < 32) {
    throw new ConfigError('invalid configuration: JWT_SECRET must be at least 32 bytes');
  }
  if (e.JWT_SECRET !== undefined && e.JWT_JWKS_URL !== undefined) {
    throw new ConfigError('invalid configuration: set JWT_SECRET or JWT_JWKS_URL, not both');
  }
  if (e.JWT_JWKS_URL !== undefined && !isHttpsOrLoopback(e.JWT_JWKS_URL)) {
    throw new ConfigError(
      `invalid configuration: JWT_JWKS_URL=${JSON.stringify(redactValue('JWT_JWKS_URL', e.JWT_JWKS_URL))}: must be an https: URL (http: only on 127.0.0.1, ::1 or localhost): keys fetched in clear could be swapped on the way`,
    );
  }
  if (e.GROUP_COMMIT_LANES + 1 >= e.PG_POOL_MAX) {
    throw new ConfigError(
      `invalid configuration: GROUP_COMMIT_LANES=${e.GROUP_COMMIT_LANES} must be at most PG_POOL_MAX − 2 (${e.PG_POOL_MAX - 2}): the lanes and the relay inbox's own lane each hold a connection, and reads need one too`,
    );
  }
  if (e.DATABASE_URL && !/^postgres(ql)?:/.test(e.DATABASE_URL)) {
    throw new ConfigError('invalid configuration: DATABASE_URL must be a postgres:// URL');
  }
  if (e.VAULT_KEYS !== undefined) {
    try {
      parseVaultKeys(e.VAULT_KEYS);
    } catch (err) {
      throw new ConfigError(`invalid configuration: VAULT_KEYS=(hidden): ${(err as Error).message}`);
    }
  }
  const config = { ...configFrom(e), oauthProviders: oauthProvidersFrom(env) };
  return deepFreeze(config);
}

/** Variables whose whole value is a secret: never echoed. */
const SECRET_VARIABLE = /SECRET|PASSWORD|API_KEY|TOKEN|VAULT_KEYS/;

/**
 * A value as it may appear in an error: secrets hidden, and the password of anything shaped
 * like a URL with credentials (`scheme://user:password@host`, even when it does not parse)
 * replaced by `***`. Everything between the user name and the last `@` is taken as the password.
 */
export function redactValue(name: string, value: string): string {
  if (SECRET_VARIABLE.test(name)) return '(hidden)';
  const at = value.lastIndexOf('@');
  if (at < 0) return value;
  const slashes = value.indexOf('//');
  const start = slashes >= 0 && slashes < at ? slashes + 2 : 0;
  const userinfo = value.slice(start, at);
  const colon = userinfo.indexOf(':');
  const shown = colon >= 0 ? `${userinfo.slice(0, colon)}:***` : '***';
  return `${value.slice(0, start)}${shown}${value.slice(at)}`;
}

/** An OAuth provider from `OAUTH_<NAME>_*` (docs/protocol.md "Integrations"). */
export interface OAuthProviderConfig {
  /** The lower-case NAME: the `:provider` of the paths. */
  name: string;
  clientId: string;
  clientSecret?: string;
  /** OpenID discovery; or the endpoints below. */
  issuer?: string;
  authorizationUrl?: string;
  tokenUrl?: string;
  revocationUrl?: string;
  scopes: string[];
  /**
   * Its URLs are `http:` to this machine (a test or development provider): oauth4webapi then
   * needs `allowInsecureRequests`. Never true for any other host.
   */
  loopbackHttp: boolean;
}

const PROVIDER_NAME = /^OAUTH_([A-Z][A-Z0-9_]{0,39})_CLIENT_ID$/;

/** The providers named by `OAUTH_<NAME>_CLIENT_ID`, each checked; a bad one fails naming its variable. */
function oauthProvidersFrom(env: Record<string, string | undefined>): OAuthProviderConfig[] {
  const providers: OAuthProviderConfig[] = [];
  for (const key of Object.keys(env).sort()) {
    const m = PROVIDER_NAME.exec(key);
    if (!m || !env[key]) continue;
    const NAME = m[1];
    const get = (suffix: string) => env[`OAUTH_${NAME}_${suffix}`] || undefined;
    const fail = (suffix: string, why: string): never => {
      const name = `OAUTH_${NAME}_${suffix}`;
      throw new ConfigError(
        `invalid configuration: ${name}=${JSON.stringify(redactValue(name, get(suffix) ?? ''))}: ${why}`,
      );
    };
    const urls: Record<string, string | undefined> = {
      ISSUER: get('ISSUER'),
      AUTHORIZATION_URL: get('AUTHORIZATION_URL'),
      TOKEN_URL: get('TOKEN_URL'),
      REVOCATION_URL: get('REVOCATION_URL'),
    };
    let insecure = false;
    for (const [suffix, url] of Object.entries(urls)) {
      if (url === undefined) continue;
      if (!URL.canParse(url)) fail(suffix, 'not a URL');
      if (!isHttpsOrLoopback(url)) fail(suffix, 'must be an https: URL (http: only on 127.0.0.1, ::1 or localhost)');
      if (new URL(url).protocol === 'http:') insecure = true;
    }
    if (!urls.ISSUER && !(urls.AUTHORIZATION_URL && urls.TOKEN_URL)) {
      fail('ISSUER', `set OAUTH_${NAME}_ISSUER, or OAUTH_${NAME}_AUTHORIZATION_URL and OAUTH_${NAME}_TOKEN_URL`);
    }
    providers.push({
      name: NAME.toLowerCase(),
      clientId: env[key] as string,
      clientSecret: get('CLIENT_SECRET'),
      issuer: urls.ISSUER,
      authorizationUrl: urls.AUTHORIZATION_URL,
      tokenUrl: urls.TOKEN_URL,
      revocationUrl: urls.REVOCATION_URL,
      scopes: (get('SCOPES') ?? '').split(/[\s,]+/).filter(Boolean),
      loopbackHttp: insecure,
    });
  }
  return providers;
}

/** `https:`, or `http:` to this machine only (127.0.0.1, ::1, localhost). */
function isHttpsOrLoopback(url: string): boolean {
  const u = new URL(url);
  if (u.protocol === 'https:') return true;
  return u.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(u.hostname);
}

function deepFreeze<T extends object>(obj: T): Readonly<T> {
  for (const value of Object.values(obj)) {
    if (value && typeof value === 'object') deepFreeze(value);
  }
  return Object.freeze(obj);
}

/** Names and defaults of every variable, for `archety --help` and the README test. */
export const configVariables: readonly string[] = Object.keys(envSchema.shape);

/** The configuration of a checked environment: its type is `Config`, so the two never drift apart. */
function configFrom(e: z.output<typeof envSchema>) {
  return {
    port: e.PORT,
    metrics: e.METRICS_PORT === undefined ? undefined : { port: e.METRICS_PORT, host: e.METRICS_HOST },
    host: e.HOST,
    nodeId: e.NODE_ID ?? `${os.hostname()}-${process.pid}`,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT ?? (process.stdout.isTTY ? 'pretty' : 'json'),
    databaseUrl: e.DATABASE_URL,
    dataDir: path.resolve(e.DATA_DIR),
    embeddedPgPort: e.EMBEDDED_PG_PORT,
    redisUrl: e.REDIS_URL,
    redisPrefix: e.REDIS_PREFIX,
    actorLeaseMs: e.ACTOR_LEASE_MS,
    pg: {
      max: e.PG_POOL_MAX,
      connectionTimeoutMillis: e.PG_CONNECTION_TIMEOUT_MS,
      idleTimeoutMillis: e.PG_IDLE_TIMEOUT_MS,
      maxLifetimeSeconds: e.PG_MAX_LIFETIME_S,
      statementTimeoutMs: e.PG_STATEMENT_TIMEOUT_MS,
      planRefreshMs: e.PG_PLAN_REFRESH_MS,
      idleInTransactionTimeoutMs:
        e.PG_IDLE_IN_TRANSACTION_TIMEOUT_MS ?? Math.max(1000, Math.floor(e.ACTOR_LEASE_MS / 2)),
      keepAliveInitialDelayMillis: e.PG_KEEPALIVE_DELAY_MS,
      applicationName: e.PG_APPLICATION_NAME,
    },
    groupCommit: {
      maxBatch: e.GROUP_COMMIT_MAX_BATCH,
      maxBytes: e.GROUP_COMMIT_MAX_BYTES,
      attempts: e.GROUP_COMMIT_ATTEMPTS,
      lanes: e.GROUP_COMMIT_LANES,
      intervalMs: e.GROUP_COMMIT_INTERVAL_MS,
    },
    jwt: {
      secret: e.JWT_SECRET,
      jwksUrl: e.JWT_JWKS_URL,
      issuer: e.JWT_ISSUER,
      audience: e.JWT_AUDIENCE,
      clockToleranceS: e.JWT_CLOCK_TOLERANCE_S,
    },
    actorIdleMs: e.ACTOR_IDLE_MS,
    ops: { retentionHours: e.OPS_RETENTION_HOURS, pruneEveryMs: e.OPS_PRUNE_EVERY_MS },
    actorMaxActivations: e.ACTOR_MAX_ACTIVATIONS ?? Math.max(1, Math.floor(e.PG_POOL_MAX / 2)),
    limits: {
      maxBodyBytes: e.MAX_BODY_BYTES,
      maxTextChars: e.MAX_TEXT_CHARS,
      maxAttachmentBytes: e.MAX_ATTACHMENT_BYTES,
      maxFrameBytes: e.MAX_FRAME_BYTES,
      maxOpsPerSecond: e.MAX_OPS_PER_SECOND,
      upgradesPerIpPerSecond: e.UPGRADES_PER_IP_PER_SECOND,
      upgradesBurst: e.UPGRADES_BURST,
      httpRequestsPerIpPerSecond: e.HTTP_REQUESTS_PER_IP_PER_SECOND,
      httpRequestsBurst: e.HTTP_REQUESTS_BURST,
      bodiesInFlightPerIp: e.BODIES_IN_FLIGHT_PER_IP,
      maxSocketsPerUser: e.MAX_SOCKETS_PER_USER,
      maxSocketsPerSession: e.MAX_SOCKETS_PER_SESSION,
    },
    trustedProxies: e.TRUSTED_PROXIES,
    ws: { idleTimeoutS: e.WS_IDLE_TIMEOUT_S, maxBackpressureBytes: e.WS_MAX_BACKPRESSURE_BYTES },
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    allowUwsFallback: e.ALLOW_UWS_FALLBACK,
    openai: {
      apiKey: e.OPENAI_API_KEY,
      baseUrl: e.OPENAI_BASE_URL,
      model: e.OPENAI_MODEL,
      visionModel: e.OPENAI_VISION_MODEL,
      moderationModel: e.OPENAI_MODERATION_MODEL,
      timeoutMs: e.MODEL_TIMEOUT_MS,
      breakerFailures: e.MODEL_BREAKER_FAILURES,
      breakerHalfOpenMs: e.MODEL_BREAKER_HALF_OPEN_MS,
    },
    photoWaitMs: e.PHOTO_WAIT_MS,
    photoLateMs: Math.max(e.PHOTO_LATE_MS, e.PHOTO_WAIT_MS),
    relay: {
      mediaHosts: e.RELAY_MEDIA_HOSTS.split(',')
        .map((h) => h.trim().toLowerCase())
        .filter(Boolean),
      senderPerMinute: e.SENDER_MESSAGES_PER_MINUTE,
      senderBurst: e.SENDER_BURST,
      burstQuietMs: e.BURST_QUIET_MS,
      eventsPerSecond: e.RELAY_EVENTS_PER_SECOND,
      eventsBurst: e.RELAY_EVENTS_BURST,
      redeliverMs: e.RELAY_REDELIVER_MS,
      inboxSweepMs: e.RELAY_INBOX_SWEEP_MS,
      maxAttempts: e.RELAY_MAX_ATTEMPTS,
      retryBackoffMs: e.RELAY_RETRY_BACKOFF_MS,
      sendWindow: e.RELAY_SEND_WINDOW,
      processingWindow: e.RELAY_PROCESSING_WINDOW,
      batchEvents: e.RELAY_BATCH_EVENTS,
      batchCommitMs: e.RELAY_BATCH_COMMIT_MS,
      backlogMax: e.RELAY_BACKLOG_MAX,
      backlogHeldBytes: e.RELAY_BACKLOG_HELD_BYTES,
      inboxRetentionHours: e.INBOX_RETENTION_HOURS,
      attachmentRetentionMinutes: e.INBOX_ATTACHMENT_RETENTION_MINUTES,
      outboxRetentionHours: e.OUTBOX_RETENTION_HOURS,
      retentionEveryMs: e.RELAY_RETENTION_EVERY_MS,
    },
    vault: {
      keys: e.VAULT_KEYS,
      /** Unset: the URL the server listens on (`http://<HOST>:<port>`, the port it was given when PORT=0). */
      publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
      refreshAheadS: e.OAUTH_REFRESH_AHEAD_S,
      refreshIntervalMs: Math.round(e.OAUTH_REFRESH_INTERVAL_S * 1000),
      maxAttempts: e.OAUTH_REFRESH_MAX_ATTEMPTS,
      backoffMs: Math.round(e.OAUTH_REFRESH_BACKOFF_S * 1000),
      batch: e.OAUTH_REFRESH_BATCH,
      timeoutMs: e.OAUTH_TIMEOUT_MS,
      attempts: e.OAUTH_ATTEMPTS,
      breakerFailures: e.OAUTH_BREAKER_FAILURES,
      breakerHalfOpenMs: e.OAUTH_BREAKER_HALF_OPEN_MS,
    },
  };
}
