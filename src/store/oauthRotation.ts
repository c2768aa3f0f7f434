/**
 * `archety vault rotate`'s rewrite: every token row and pending authorization not under the
 * current key, re-encrypted in batches, each batch in its own transaction with its rows locked
 * (`FOR UPDATE`: a refresh that claims one meanwhile waits for the batch's commit). Running it
 * again rewrites nothing; a row no listed key opens fails it (the caller's `reseal` throws).
 */

import type { Sealed } from './oauthRepository.ts';
import { type Pool, type PoolClient, transaction } from './pool.ts';

/**
 * Re-encrypts, in batches of `batch` rows each in its own transaction, every token row and
 * pending authorization not under `kid`; `reseal` decrypts and encrypts again. Returns the
 * number of rows rewritten.
 */
export async function rotateVault(
  pool: Pool,
  kid: string,
  batch: number,
  reseal: {
    tokens: (row: {
      user: string;
      provider: string;
      encAccess: string | null;
      encRefresh: string | null;
    }) => Promise<Sealed>;
    verifier: (row: { stateHash: string; user: string; provider: string; encVerifier: string }) => Promise<string>;
  },
): Promise<{ tokens: number; states: number }> {
  const tokens = await inBatches(pool, batch, async (client) => {
    const { rows } = await client.query<{
      user_id: string;
      provider: string;
      enc_access: string | null;
      enc_refresh: string | null;
    }>(
      `SELECT user_id, provider, enc_access, enc_refresh FROM oauth_tokens
          WHERE kid IS DISTINCT FROM $1 AND (enc_access IS NOT NULL OR enc_refresh IS NOT NULL)
          LIMIT $2 FOR UPDATE`,
      [kid, batch],
    );
    for (const r of rows) {
      const sealed = await reseal.tokens({
        user: r.user_id,
        provider: r.provider,
        encAccess: r.enc_access,
        encRefresh: r.enc_refresh,
      });
      await client.query(
        'UPDATE oauth_tokens SET enc_access = $3, enc_refresh = $4, kid = $5 WHERE user_id = $1 AND provider = $2',
        [r.user_id, r.provider, sealed.encAccess, sealed.encRefresh, sealed.kid],
      );
    }
    return rows.length;
  });
  const states = await inBatches(pool, batch, async (client) => {
    const { rows } = await client.query<{
      state_hash: string;
      user_id: string;
      provider: string;
      enc_verifier: string;
    }>('SELECT state_hash, user_id, provider, enc_verifier FROM oauth_states WHERE kid <> $1 LIMIT $2 FOR UPDATE', [
      kid,
      batch,
    ]);
    for (const r of rows) {
      const enc = await reseal.verifier({
        stateHash: r.state_hash,
        user: r.user_id,
        provider: r.provider,
        encVerifier: r.enc_verifier,
      });
      await client.query('UPDATE oauth_states SET enc_verifier = $2, kid = $3 WHERE state_hash = $1', [
        r.state_hash,
        enc,
        kid,
      ]);
    }
    return rows.length;
  });
  return { tokens, states };
}

/** Runs `step` (one batch, its rows rewritten; how many) in transactions until a batch is short; the total. */
async function inBatches(pool: Pool, batch: number, step: (client: PoolClient) => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await transaction(pool, step);
    total += n;
    if (n < batch) return total;
  }
}
