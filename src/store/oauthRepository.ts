/**
 * The OAuth vault's rows: pending authorizations (`oauth_states`, single use) and integrations
 * (`oauth_tokens`: encrypted tokens, status, refresh attempts and the refresh claim).
 *
 * A refresh is claimed before it is made: `claim_id` (a fresh uuid) and `claimed_until` (a
 * lease) are set in one short statement, by the job for a batch of due rows
 * (`FOR UPDATE SKIP LOCKED`, so processes claiming at once take different rows) or by
 * `getAccessToken` for one row. The provider is called outside any transaction, and the
 * outcome is written only `WHERE claim_id = <its claim>`: a refresh whose lease ran out and
 * was claimed again, or whose integration was reconnected or disconnected meanwhile, writes
 * nothing. So each token has at most one refresh in flight, across any number of processes.
 */
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { type Pool, query, transaction } from './pool.ts';

export type IntegrationStatus = 'connected' | 'refresh_failed' | 'revoked';

export interface IntegrationSummary {
  provider: string;
  status: IntegrationStatus;
  scopes: string[];
  expiresAt: string;
  updatedAt: string;
}

/** An integration as `archety integrations` lists it: every user's, never a token. */
export interface IntegrationListing extends IntegrationSummary {
  user: string;
  attempts: number;
  lastError: string | null;
}

/** A row with its ciphertexts, as a refresh or a read needs it. */
export interface TokenRow {
  user: string;
  provider: string;
  status: IntegrationStatus;
  encAccess: string | null;
  encRefresh: string | null;
  expiresAt: Date;
  /** Whether the access token is good for at least the asked margin (by the database's clock). */
  fresh: boolean;
  /** Set when this row was claimed for a refresh by the statement that returned it. */
  claimId: string | null;
}

/** New ciphertexts of a row (the tokens re-encrypted, or newly issued). */
export interface Sealed {
  encAccess: string;
  encRefresh: string | null;
  kid: string;
}

const COLUMNS = `user_id, provider, status, enc_access, enc_refresh, expires_at, claim_id`;

interface Row {
  user_id: string;
  provider: string;
  status: IntegrationStatus;
  enc_access: string | null;
  enc_refresh: string | null;
  expires_at: Date;
  claim_id: string | null;
  fresh?: boolean;
}

const rowOf = (r: Row): TokenRow => ({
  user: r.user_id,
  provider: r.provider,
  status: r.status,
  encAccess: r.enc_access,
  encRefresh: r.enc_refresh,
  expiresAt: r.expires_at,
  fresh: r.fresh ?? false,
  claimId: r.claim_id,
});

/**
 * Due rows of the refresh job: expiring within $1 s, connected, not backing off, not claimed by
 * a live lease; soonest first, locked with SKIP LOCKED so that concurrent claims take different
 * rows. Served by oauth_tokens_expires_idx (expires_at).
 */
const DUE = `SELECT user_id, provider FROM oauth_tokens
         WHERE expires_at < now() + make_interval(secs => $1::float8)
           AND status = 'connected'
           AND (next_attempt_at IS NULL OR next_attempt_at <= now())
           AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY expires_at
         LIMIT $2
         FOR UPDATE SKIP LOCKED`;

const CLAIM = 'claim_id = gen_random_uuid(), claimed_until = now() + make_interval(secs => $3::float8 / 1000)';

export const oauthQueries = {
  due: DUE,
  /** The job's claim of a batch of due rows, for $3 ms. */
  claimDue: `WITH due AS (${DUE})
              UPDATE oauth_tokens t SET ${CLAIM}
                FROM due
               WHERE t.user_id = due.user_id AND t.provider = due.provider
           RETURNING t.user_id, t.provider, t.status, t.enc_access, t.enc_refresh, t.expires_at, t.claim_id`,
  /**
   * `getAccessToken`'s claim of one row, unless a live claim holds it or its access token is
   * fresh for $4 s: a caller that found it stale while another refreshed it must not refresh
   * it a second time once that claim is released.
   */
  claimOne: `UPDATE oauth_tokens SET ${CLAIM}
              WHERE user_id = $1 AND provider = $2 AND status = 'connected'
                AND (claimed_until IS NULL OR claimed_until < now())
                AND NOT (enc_access IS NOT NULL AND expires_at > now() + make_interval(secs => $4::float8))
          RETURNING ${COLUMNS}`,
} as const;

export class OAuthRepository {
  constructor(private readonly pool: Pool) {}

  /** Records a pending authorization (its `state` hashed), valid for `ttlS` seconds. */
  async insertState(s: {
    stateHash: string;
    user: string;
    provider: string;
    encVerifier: string;
    kid: string;
    ttlS: number;
  }): Promise<void> {
    await query(
      this.pool,
      `INSERT INTO oauth_states (state_hash, user_id, provider, enc_verifier, kid, expires_at)
       VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))`,
      [s.stateHash, s.user, s.provider, s.encVerifier, s.kid, s.ttlS],
    );
  }

  /**
   * Takes (deletes) the pending authorization of `stateHash` for `provider`: at most once.
   * Null when there is none (unknown, used, or for another provider); `expired` when it was too old.
   */
  async takeState(
    stateHash: string,
    provider: string,
  ): Promise<{ user: string; encVerifier: string; expired: boolean } | null> {
    const { rows } = await query<{ user_id: string; enc_verifier: string; expired: boolean }>(
      this.pool,
      `DELETE FROM oauth_states WHERE state_hash = $1 AND provider = $2
       RETURNING user_id, enc_verifier, expires_at <= now() AS expired`,
      [stateHash, provider],
    );
    const r = rows[0];
    return r ? { user: r.user_id, encVerifier: r.enc_verifier, expired: r.expired } : null;
  }

  /** Deletes pending authorizations that expired over an hour ago; returns how many. */
  async pruneStates(): Promise<number> {
    const { rowCount } = await query(
      this.pool,
      "DELETE FROM oauth_states WHERE expires_at < now() - interval '1 hour'",
      [],
    );
    return rowCount ?? 0;
  }

  /** Stores a new connection's tokens (replacing any earlier one of the user and provider, and its claim). */
  async connect(user: string, provider: string, sealed: Sealed, expiresInS: number, scopes: string[]): Promise<void> {
    await query(
      this.pool,
      `INSERT INTO oauth_tokens (user_id, provider, enc_access, enc_refresh, kid, expires_at, scopes, status, updated_at)
       VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::float8), $7, 'connected', now())
       ON CONFLICT (user_id, provider) DO UPDATE
         SET enc_access = EXCLUDED.enc_access, enc_refresh = EXCLUDED.enc_refresh, kid = EXCLUDED.kid,
             expires_at = EXCLUDED.expires_at, scopes = EXCLUDED.scopes, status = 'connected',
             attempts = 0, next_attempt_at = NULL, last_error = NULL, claim_id = NULL, claimed_until = NULL,
             updated_at = now()`,
      [user, provider, sealed.encAccess, sealed.encRefresh, sealed.kid, expiresInS, scopes.join(' ')],
    );
  }

  /** The user's integrations, by provider. */
  async list(user: string): Promise<IntegrationSummary[]> {
    const { rows } = await query<{
      provider: string;
      status: IntegrationStatus;
      scopes: string;
      expires_at: Date;
      updated_at: Date;
    }>(
      this.pool,
      'SELECT provider, status, scopes, expires_at, updated_at FROM oauth_tokens WHERE user_id = $1 ORDER BY provider',
      [user],
      { idempotent: true },
    );
    return rows.map((r) => ({
      provider: r.provider,
      status: r.status,
      scopes: r.scopes.split(' ').filter(Boolean),
      expiresAt: r.expires_at.toISOString(),
      updatedAt: r.updated_at.toISOString(),
    }));
  }

  /** Every integration of every user (for `archety integrations`), never a token. */
  async listAll(): Promise<IntegrationListing[]> {
    const { rows } = await query<{
      user_id: string;
      provider: string;
      status: IntegrationStatus;
      scopes: string;
      expires_at: Date;
      updated_at: Date;
      attempts: number;
      last_error: string | null;
    }>(
      this.pool,
      `SELECT user_id, provider, status, scopes, expires_at, updated_at, attempts, last_error
         FROM oauth_tokens ORDER BY user_id, provider`,
      [],
      { idempotent: true },
    );
    return rows.map((r) => ({
      user: r.user_id,
      provider: r.provider,
      status: r.status,
      scopes: r.scopes.split(' ').filter(Boolean),
      expiresAt: r.expires_at.toISOString(),
      updatedAt: r.updated_at.toISOString(),
      attempts: r.attempts,
      lastError: r.last_error,
    }));
  }

  /** The row of `user` and `provider`; `fresh` when its access token is good for `marginS` more seconds. */
  async get(user: string, provider: string, marginS: number): Promise<TokenRow | null> {
    const { rows } = await query<Row>(
      this.pool,
      `SELECT ${COLUMNS}, expires_at > now() + make_interval(secs => $3::float8) AS fresh
         FROM oauth_tokens WHERE user_id = $1 AND provider = $2`,
      [user, provider, marginS],
      { idempotent: true },
    );
    return rows[0] ? rowOf(rows[0]) : null;
  }

  /** Claims up to `batch` due rows for a refresh lasting at most `leaseMs` (see `oauthQueries.due`). */
  async claimDue(aheadS: number, batch: number, leaseMs: number): Promise<TokenRow[]> {
    const { rows } = await query<Row>(this.pool, oauthQueries.claimDue, [aheadS, batch, leaseMs]);
    return rows.map(rowOf);
  }

  /** Claims one connected row for a refresh, unless a live claim holds it; null then (or when there is none). */
  async claimOne(user: string, provider: string, leaseMs: number, marginS: number): Promise<TokenRow | null> {
    const { rows } = await query<Row>(this.pool, oauthQueries.claimOne, [user, provider, leaseMs, marginS]);
    return rows[0] ? rowOf(rows[0]) : null;
  }

  /** Releases a claim without an outcome (the refresh could not be attempted). */
  async release(user: string, provider: string, claimId: string): Promise<void> {
    await query(
      this.pool,
      'UPDATE oauth_tokens SET claim_id = NULL, claimed_until = NULL WHERE user_id = $1 AND provider = $2 AND claim_id = $3',
      [user, provider, claimId],
    );
  }

  /** Writes a refresh's new tokens, if the claim still holds; false when it no longer does. */
  async refreshed(
    row: TokenRow,
    claimId: string,
    sealed: Sealed,
    expiresInS: number,
    scopes: string[],
  ): Promise<boolean> {
    const { rowCount } = await query(
      this.pool,
      `UPDATE oauth_tokens
          SET enc_access = $4, enc_refresh = $5, kid = $6, expires_at = now() + make_interval(secs => $7::float8),
              scopes = $8, attempts = 0, next_attempt_at = NULL, last_error = NULL,
              claim_id = NULL, claimed_until = NULL, updated_at = now()
        WHERE user_id = $1 AND provider = $2 AND claim_id = $3`,
      [row.user, row.provider, claimId, sealed.encAccess, sealed.encRefresh, sealed.kid, expiresInS, scopes.join(' ')],
    );
    return rowCount === 1;
  }

  /**
   * Records a failed refresh, if the claim still holds: backoff of `backoffMs` × 2^(attempts − 1),
   * `refresh_failed` once `maxAttempts` failed. Null when the claim no longer holds.
   */
  async refreshFailed(
    row: TokenRow,
    claimId: string,
    maxAttempts: number,
    backoffMs: number,
    error: string,
    /** Ciphertexts to keep anyway (a rotated refresh token that came with an unusable answer). */
    sealed?: Sealed,
  ): Promise<{ status: IntegrationStatus; attempts: number } | null> {
    const { rows } = await query<{ status: IntegrationStatus; attempts: number }>(
      this.pool,
      `UPDATE oauth_tokens
          SET attempts = attempts + 1, last_error = $6,
              enc_access = coalesce($7, enc_access), enc_refresh = coalesce($8, enc_refresh), kid = coalesce($9, kid),
              status = CASE WHEN attempts + 1 >= $4 THEN 'refresh_failed' ELSE status END,
              next_attempt_at = now() + make_interval(secs => $5::float8 / 1000 * 2 ^ least(attempts, 20)),
              claim_id = NULL, claimed_until = NULL, updated_at = now()
        WHERE user_id = $1 AND provider = $2 AND claim_id = $3
    RETURNING status, attempts`,
      [
        row.user,
        row.provider,
        claimId,
        maxAttempts,
        backoffMs,
        error.slice(0, 500),
        sealed?.encAccess ?? null,
        sealed?.encRefresh ?? null,
        sealed?.kid ?? null,
      ],
    );
    return rows[0] ?? null;
  }

  /**
   * Marks the integration `revoked` (its tokens forgotten) and queues `notice` to the user's
   * direct chat, in one transaction and only if the claim still holds: one notice per revocation.
   * The chat is the user's direct conversation with Sage when there is one, else `fallbackGuid`.
   */
  async revoke(
    row: TokenRow,
    claimId: string,
    error: string,
    notice: { conversationKey: string; fallbackGuid: string; frame: (chatGuid: string) => SendFrame },
  ): Promise<boolean> {
    return transaction(this.pool, async (client) => {
      const { rowCount } = await client.query(
        `UPDATE oauth_tokens
            SET status = 'revoked', enc_access = NULL, enc_refresh = NULL, last_error = $4,
                claim_id = NULL, claimed_until = NULL, next_attempt_at = NULL, updated_at = now()
          WHERE user_id = $1 AND provider = $2 AND claim_id = $3 AND status = 'connected'`,
        [row.user, row.provider, claimId, error.slice(0, 500)],
      );
      if (rowCount !== 1) return false;
      const chat = await client.query<{ chat_guid: string }>('SELECT chat_guid FROM conversations WHERE key = $1', [
        notice.conversationKey,
      ]);
      const frame = notice.frame(chat.rows[0]?.chat_guid ?? notice.fallbackGuid);
      await client.query('INSERT INTO relay_outbox (id, chat, conversation_key, payload) VALUES ($1, $2, $3, $4)', [
        frame.id,
        frame.chat.guid,
        notice.conversationKey,
        JSON.stringify(frame),
      ]);
      return true;
    });
  }

  /** Deletes the integration; its ciphertexts, for revoking at the provider, or null when there was none. */
  async remove(
    user: string,
    provider: string,
  ): Promise<{ encAccess: string | null; encRefresh: string | null } | null> {
    const { rows } = await query<{ enc_access: string | null; enc_refresh: string | null }>(
      this.pool,
      'DELETE FROM oauth_tokens WHERE user_id = $1 AND provider = $2 RETURNING enc_access, enc_refresh',
      [user, provider],
    );
    return rows[0] ? { encAccess: rows[0].enc_access, encRefresh: rows[0].enc_refresh } : null;
  }
}
